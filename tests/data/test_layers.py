"""Imports point downwards: `weaksup.data` takes nothing from `weaksup.losses`, and the losses
(pure torch) do not pull Lightning in through the data package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import weaksup.data
from weaksup.data.segments import BagSegments, check_bag_labels
from weaksup.losses.bag import check_bag_labels as check_bag_labels_of_losses
from weaksup.losses.pooling import BagSegments as BagSegmentsOfPooling

DATA_PACKAGE = Path(weaksup.data.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_no_data_module_imports_from_losses() -> None:
    offenders = {
        str(path.relative_to(DATA_PACKAGE)): sorted(
            module for module in _imported_modules(path) if module.startswith("weaksup.losses")
        )
        for path in sorted(DATA_PACKAGE.rglob("*.py"))
    }
    assert len(offenders) >= 10  # every module of the package was read
    assert {name: modules for name, modules in offenders.items() if modules} == {}


def test_the_moved_names_are_the_same_objects_where_losses_used_to_define_them() -> None:
    assert BagSegmentsOfPooling is BagSegments
    assert check_bag_labels_of_losses is check_bag_labels


def test_importing_the_losses_does_not_import_lightning() -> None:
    probe = (
        "import sys, weaksup.losses, weaksup.losses.bag, weaksup.losses.pooling; "
        "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'weaksup.data.datamodules') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
