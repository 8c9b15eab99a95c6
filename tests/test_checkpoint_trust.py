"""A checkpoint is data: eval and predict rebuild only what the shipped config tree names.

A real checkpoint from a tiny MIL run is edited the way an attacker would (its stored run
config, which loads cleanly with `weights_only=True`), then given to the real `weaksup-eval`
and `weaksup-predict` entry points: they must stop with an error naming the node, before the
payload (which would create a file) runs.
"""

from __future__ import annotations

import base64
import copy
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.utils import instantiate

from test_eval_predict_entry import ENTRY_POINTS, TouchOnLoad, error_of_main
from weaksup.config.trust import (
    UntrustedCheckpointError,
    check_stored_config,
    shipped_targets,
    with_moved_targets,
)
from weaksup.eval import load_checkpoint
from weaksup.predict import BAG_FILE
from weaksup.train import train

from conftest import QUIET_OVERRIDES, compose_config

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"

TINY_MIL = (
    "method=mil",
    "data=mil_gaussian",
    "loss=bag_bce",
    "backbone.hidden_sizes=[8]",
    "data.source.num_train_bags=16",
    "data.source.num_val_bags=8",
    "data.source.num_test_bags=8",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "monitor.metric=val/auc",
    "logger=none",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One one-epoch MIL run on 16 Gaussian bags: its last checkpoint and its results."""
    output_dir = tmp_path_factory.mktemp("tiny_mil")
    cfg = compose_config("train", [f"paths.output_dir={output_dir}", *QUIET_OVERRIDES, *TINY_MIL])
    results = train(cfg)
    return output_dir / "checkpoints" / "last.ckpt", results


def code_payload(marker: Path) -> dict[str, Any]:
    """The issue's payload: plain config values whose instantiation unpickles code.

    `torch.load(weights_only=False)` of the base64 bytes calls `Path(marker).touch()`.
    """
    pickled = io.BytesIO()
    torch.save(TouchOnLoad(marker), pickled)
    return {
        "_target_": "torch.load",
        "f": {
            "_target_": "io.BytesIO",
            "initial_bytes": {
                "_target_": "base64.b64decode",
                "s": base64.b64encode(pickled.getvalue()).decode("ascii"),
            },
        },
        "weights_only": False,
    }


def set_node(config: dict[str, Any], path: str, value: Any) -> None:
    """Replace the node at a dotted path (`a.b`, or `a.b[0]` for a list item) of a plain config."""
    *parents, last = path.split(".")
    for key in parents:
        config = config[key]
    if last.endswith("]"):
        key, index = last[:-1].split("[")
        config[key][int(index)] = value
    else:
        config[last] = value


def crafted_checkpoint(source: Path, target: Path, **nodes: Any) -> Path:
    """A copy of the real checkpoint `source` with stored config nodes replaced (path=value)."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    config = checkpoint["weaksup"]["config"]
    for path, value in nodes.items():
        set_node(config, path, value)
    torch.save(checkpoint, target)
    torch.load(target, weights_only=True)  # the crafted file passes weights_only loading
    return target


def run_entry(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    checkpoint: Path,
    run_dir: Path,
) -> str:
    monkeypatch.setattr(
        sys,
        "argv",
        [command, f"ckpt_path={checkpoint}", f"hydra.run.dir={run_dir}", *ENTRY_OPTIONS[command]],
    )
    return error_of_main(ENTRY_POINTS[command], capsys)


ENTRY_OPTIONS = {
    "weaksup-eval": ("logger=none", "trainer.enable_progress_bar=false"),
    "weaksup-predict": ("trainer.enable_progress_bar=false",),
}


def test_trusted_targets_are_every_target_of_every_shipped_config_file() -> None:
    """Reference: every `_target_` value at any depth of every YAML file under conf/."""

    def targets_in(node: Any) -> set[str]:
        if isinstance(node, dict):
            own = {node["_target_"]} if "_target_" in node else set()
            return own.union(*(targets_in(child) for child in node.values()))
        if isinstance(node, list):
            return set().union(*(targets_in(child) for child in node))
        return set()

    expected = set().union(
        *(targets_in(yaml.safe_load(path.read_text())) for path in REPO_CONF.rglob("*.yaml"))
    )
    assert shipped_targets() == expected
    # Nested and experiment-only targets count; code execution primitives do not.
    assert {
        "weaksup.nn.MLP",
        "weaksup.losses.minmax.MinMaxLoss",
        "weaksup.nn.LinearEncoder",
        "weaksup.plots.bag_mosaic.BagMosaicCallback",
    } <= shipped_targets()
    assert not {"torch.load", "os.system", "io.BytesIO", "base64.b64decode"} & shipped_targets()


def test_the_payload_runs_code_when_instantiated(tmp_path: Path) -> None:
    """What eval/predict did with a stored node before the check: the marker file appears."""
    marker = tmp_path / "payload_ran"
    instantiate(code_payload(marker))
    assert marker.exists()


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(
    "node",
    [
        "data.source",
        "backbone",
        "pooling",
        "loss",
        "method",
        "optimizer",
        "backbone.hidden_sizes[0]",
    ],
)
def test_a_code_payload_in_any_node_stops_before_it_runs(
    trained: tuple[Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
    node: str,
) -> None:
    marker = tmp_path / "payload_ran"
    checkpoint = crafted_checkpoint(
        trained[0], tmp_path / "crafted.ckpt", **{node: code_payload(marker)}
    )
    error = run_entry(monkeypatch, capsys, command, checkpoint, tmp_path / "run")
    assert (
        f"UntrustedCheckpointError: checkpoint {checkpoint}: stored config node {node} has "
        "_target_ 'torch.load', which no shipped config file names"
    ) in error
    assert "add a config file for it under conf/<group>/" in error
    assert not marker.exists()
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / BAG_FILE).exists()


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_a_top_level_os_system_target_is_refused(
    trained: tuple[Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    marker = tmp_path / "os_system_ran"
    checkpoint = crafted_checkpoint(
        trained[0],
        tmp_path / "crafted.ckpt",
        data={"_target_": "os.system", "command": f"touch {marker}"},
    )
    error = run_entry(monkeypatch, capsys, command, checkpoint, tmp_path / "run")
    assert "stored config node data has _target_ 'os.system'" in error
    assert not marker.exists()


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_an_unknown_module_is_never_imported(
    trained: tuple[Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    """`get_class` of a stored `_target_` would import its module: the import alone runs code."""
    marker = tmp_path / "module_imported"
    (tmp_path / "trust_probe_module.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n\nclass Method:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    checkpoint = crafted_checkpoint(
        trained[0],
        tmp_path / "crafted.ckpt",
        **{"method._target_": "trust_probe_module.Method"},
    )
    error = run_entry(monkeypatch, capsys, command, checkpoint, tmp_path / "run")
    assert "stored config node method has _target_ 'trust_probe_module.Method'" in error
    assert not marker.exists() and "trust_probe_module" not in sys.modules


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_a_stored_interpolation_is_refused_unresolved(
    trained: tuple[Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    monkeypatch.setenv("WEAKSUP_TRUST_SECRET", "s3cr3t")
    checkpoint = crafted_checkpoint(
        trained[0],
        tmp_path / "crafted.ckpt",
        **{"data.source.seed": "${oc.env:WEAKSUP_TRUST_SECRET}"},
    )
    error = run_entry(monkeypatch, capsys, command, checkpoint, tmp_path / "run")
    assert (
        "stored config node data.source.seed = '${oc.env:WEAKSUP_TRUST_SECRET}' is an interpolation"
    ) in error
    assert "s3cr3t" not in error


def test_instantiation_keys_the_shipped_tree_never_uses_are_refused(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    checkpoint = crafted_checkpoint(
        trained[0], tmp_path / "crafted.ckpt", **{"backbone._args_": [[1, 8]]}
    )
    with pytest.raises(UntrustedCheckpointError, match=r"stored config node backbone uses _args_"):
        load_checkpoint(checkpoint)


def test_non_plain_values_and_non_tensor_weights_are_refused(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    with_tensor = crafted_checkpoint(
        trained[0], tmp_path / "tensor.ckpt", **{"optimizer.lr": torch.tensor(0.1)}
    )
    with pytest.raises(
        UntrustedCheckpointError, match=r"node optimizer.lr holds a Tensor, not a plain"
    ):
        load_checkpoint(with_tensor)
    checkpoint = torch.load(trained[0], weights_only=True)
    checkpoint["state_dict"]["classifier.weight"] = "not weights"
    torch.save(checkpoint, tmp_path / "weights.ckpt")
    with pytest.raises(
        ValueError, match=r"state_dict\['classifier.weight'\] is a str, not a tensor"
    ):
        load_checkpoint(tmp_path / "weights.ckpt")


def test_a_config_without_instantiation_keys_or_foreign_targets_passes(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    stored = torch.load(trained[0], weights_only=True)["weaksup"]["config"]
    check_stored_config(copy.deepcopy(stored), trained[0])  # no error
    edited = copy.deepcopy(stored)
    edited["note"] = {"nested": [{"_target_": "builtins.eval", "source": "1"}]}
    with pytest.raises(UntrustedCheckpointError, match=r"node note\.nested\[0\] has _target_"):
        check_stored_config(edited, trained[0])


def test_a_checkpoint_of_the_shipped_tree_still_evaluates_and_predicts(
    trained: tuple[Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    checkpoint, results = trained
    for command in ENTRY_POINTS:
        monkeypatch.setattr(
            sys,
            "argv",
            [
                command,
                f"ckpt_path={checkpoint}",
                f"hydra.run.dir={tmp_path / command}",
                *ENTRY_OPTIONS[command],
            ],
        )
        ENTRY_POINTS[command]()
    evaluated = json.loads((tmp_path / "weaksup-eval" / "metrics.json").read_text())
    assert evaluated["checkpoint"] == str(checkpoint)
    assert set(evaluated["test"]) == set(results["test"])
    # The run tested its best checkpoint; after one epoch that is last.ckpt.
    for name, value in results["test"].items():
        assert evaluated["test"][name] == pytest.approx(value, abs=1e-6)
    with (tmp_path / "weaksup-predict" / BAG_FILE).open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 8  # data.source.num_test_bags
    assert {row["bag_label"] for row in rows} <= {"0", "1"}
    assert all(0.0 <= float(row["bag_score"]) <= 1.0 for row in rows)


def test_a_class_that_moved_is_renamed_not_refused() -> None:
    """Checkpoints of the min-max post's runs name `LinearEncoder` where it used to live."""
    stored = {"backbone": {"_target_": "weaksup.methods.minmax.LinearEncoder", "x": [1]}}
    renamed = with_moved_targets(stored)
    assert renamed == {"backbone": {"_target_": "weaksup.nn.LinearEncoder", "x": [1]}}
    check_stored_config(renamed, "old.ckpt")
    with pytest.raises(UntrustedCheckpointError, match="backbone"):
        check_stored_config(stored, "old.ckpt")
