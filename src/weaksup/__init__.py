"""weaksup."""
