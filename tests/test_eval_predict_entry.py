"""`weaksup-eval` / `weaksup-predict` through their console `main`: bad `ckpt_path` arguments.

Each case runs the real entry point in-process (real Hydra, argv patched) and asserts on the
message the user sees: one `ConfigError` naming the argument or the file, no traceback.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from weaksup import eval as eval_entry
from weaksup import predict as predict_entry

ENTRY_POINTS = {"weaksup-eval": eval_entry.main, "weaksup-predict": predict_entry.main}


class TouchOnLoad:
    """Pickles as a call of `Path.touch`: unpickling it (weights_only=False) creates `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., None], tuple[Path]]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def error_of_main(main: Callable[[], object], capsys: pytest.CaptureFixture[str]) -> str:
    """The error a failing entry point reports, however the Hydra wrapper delivers it.

    Either `main()` prints the error and exits non-zero (what `weaksup.cli` does today for a
    `ConfigError`), or the exception propagates out of `main()`; both give its text.
    """
    try:
        main()
    except SystemExit as stop:
        assert stop.code not in (0, None), f"main() exited with {stop.code!r}"
        return capsys.readouterr().err
    except Exception as error:  # the entry point let the error through
        return f"{type(error).__name__}: {error}"
    pytest.fail("main() returned normally; an error was expected")


def run_entry(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    run_dir: Path,
    *arguments: str,
) -> str:
    """Run `command` with `arguments` in-process; the error it reports."""
    monkeypatch.setattr(sys, "argv", [command, *arguments, f"hydra.run.dir={run_dir}"])
    return error_of_main(ENTRY_POINTS[command], capsys)


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("arguments", [(), ("ckpt_path=null",)], ids=["absent", "null"])
def test_without_ckpt_path_says_it_is_required_and_how_to_pass_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
    arguments: tuple[str, ...],
) -> None:
    error = run_entry(monkeypatch, capsys, command, tmp_path / "run", *arguments)
    assert (
        f"ConfigError: ckpt_path is required: {command} "
        "ckpt_path=<run folder>/checkpoints/<file>.ckpt"
    ) in error
    assert "MissingMandatoryValue" not in error and "Traceback" not in error


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_a_ckpt_path_that_is_not_a_file_is_named(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    missing = tmp_path / "nowhere" / "last.ckpt"
    error = run_entry(monkeypatch, capsys, command, tmp_path / "run", f"ckpt_path={missing}")
    assert f"ckpt_path='{missing}' is not a file: {command} ckpt_path=" in error


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_a_truncated_checkpoint_is_named_as_unreadable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"weight": torch.ones(64, 64)}}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[:300])
    error = run_entry(monkeypatch, capsys, command, tmp_path / "run", f"ckpt_path={truncated}")
    assert f"CheckpointError: checkpoint {truncated} cannot be read (truncated, corrupt" in error


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_a_checkpoint_of_pickled_code_is_refused_without_running_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    marker = tmp_path / "pickled_code_ran"
    crafted = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "weaksup": TouchOnLoad(marker)}, crafted)
    error = run_entry(monkeypatch, capsys, command, tmp_path / "run", f"ckpt_path={crafted}")
    assert f"CheckpointError: checkpoint {crafted} cannot be read" in error
    assert "weights_only loading refuses" in error
    assert not marker.exists()
    torch.load(crafted, weights_only=False)  # the payload is live: loading it unsafely runs it
    assert marker.exists()


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_a_checkpoint_without_a_run_config_says_what_wrote_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, foreign)
    error = run_entry(monkeypatch, capsys, command, tmp_path / "run", f"ckpt_path={foreign}")
    assert (
        f"CheckpointError: {foreign} holds no weaksup run config (was it written by weaksup-train?)"
    ) in error
