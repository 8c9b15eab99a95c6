"""Package discovery: the code under src/ plus the Hydra config tree at conf/ as `weaksup.conf`."""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "weaksup.conf"])
