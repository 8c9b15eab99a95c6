"""Package discovery: the code under src/ plus the Hydra config tree at conf/ as `weaksup.conf`.

Each config group folder is listed as a (data-only) subpackage of `weaksup.conf`, so wheels
ship every YAML file and Hydra finds them through `pkg://weaksup.conf`.
"""

from pathlib import Path

from setuptools import find_packages, setup

CONFIG_GROUPS = sorted(
    ".".join(("weaksup.conf", *folder.relative_to("conf").parts))
    for folder in Path("conf").rglob("*")
    if folder.is_dir() and folder.name != "__pycache__"
)

setup(packages=[*find_packages("src"), "weaksup.conf", *CONFIG_GROUPS])
