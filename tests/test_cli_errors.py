"""Errors at the console entry points: one line naming the key and what it may be, exit code 1.

Every case runs `main` of `weaksup.train` / `weaksup.eval` in-process with a patched argv
(real Hydra, real Trainer): an error the user can fix ends in `SystemExit(1)` with one
`<ErrorClass>: ...` line on stderr and no traceback; an unexpected error escapes `main` with
its traceback; `HYDRA_FULL_ERROR=1` lets every error escape.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import ConfigCompositionException, InstantiationException

from weaksup import eval as eval_entry
from weaksup import train as train_entry
from weaksup.config.validation import ConfigError

from conftest import QUIET_OVERRIDES

FULL_ERROR = "HYDRA_FULL_ERROR"
TRAINER_KEYS = ", ".join(inspect.signature(pl.Trainer).parameters)
MAX_EPOCH_MESSAGE = (
    "ConfigError: unknown key 'trainer.max_epoch' for pytorch_lightning.Trainer (trainer); "
    f"did you mean max_epochs? Allowed keys: {TRAINER_KEYS}"
)
SEED_MESSAGE = "ConfigError: 'seed' must be an integer from 0 to 4294967295, got "


class ExplodingSource:
    """A data source whose constructor fails unexpectedly, saying what HYDRA_FULL_ERROR was."""

    def __init__(self, **kwargs: object) -> None:
        raise RuntimeError(f"source broke; {FULL_ERROR}={os.environ.get(FULL_ERROR)}")


@pytest.fixture(autouse=True)
def _no_full_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FULL_ERROR, raising=False)


def stopped_with(
    main: Callable[[], object],
    arguments: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """Run `main` with `arguments`; it must exit 1. Returns the last stderr line."""
    monkeypatch.setattr(sys, "argv", ["weaksup", *arguments])
    with pytest.raises(SystemExit) as stopped:
        main()
    err = capsys.readouterr().err
    assert stopped.value.code == 1
    assert "Traceback" not in err
    assert FULL_ERROR not in err  # no "set HYDRA_FULL_ERROR=1" footer either
    return err.rstrip("\n").splitlines()[-1]


def train_arguments(tmp_path: Path, *overrides: str) -> list[str]:
    return [*overrides, f"hydra.run.dir={tmp_path / 'run'}", *QUIET_OVERRIDES]


@pytest.mark.parametrize(
    "override", ["trainer.max_epoch=3", "+trainer.max_epoch=3", "++trainer.max_epoch=3"]
)
def test_a_misspelled_key_gives_one_message_with_or_without_plus(
    override: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = stopped_with(train_entry.main, train_arguments(tmp_path, override), monkeypatch, capsys)
    assert line == MAX_EPOCH_MESSAGE
    assert os.environ.get(FULL_ERROR) is None  # the switch used inside main is put back


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "monitor.metrik=val/loss",
            "ConfigError: unknown key 'monitor.metrik' in monitor; did you mean metric? "
            "Allowed keys: metric, mode",
        ),
        (
            "data.source.nois=0.3",
            "ConfigError: unknown key 'data.source.nois' for weaksup.data.sources.TwoMoons "
            "(data.source); did you mean noise? "
            "Allowed keys: n_samples, noise, val_fraction, test_fraction, seed",
        ),
        (
            "optimizer.learning_rate=0.1",
            "ConfigError: unknown key 'optimizer.learning_rate' for torch.optim.Adam (optimizer); "
            f"allowed keys: {', '.join(inspect.signature(torch.optim.Adam).parameters)}",
        ),
        (
            "trainer.max_steps=5",
            "ConfigError: 'trainer.max_steps' is an argument of pytorch_lightning.Trainer that "
            "trainer does not set; add it with a leading +: +trainer.max_steps=...",
        ),
    ],
)
def test_a_key_the_config_lacks_names_its_node_and_the_allowed_keys(
    override: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = stopped_with(train_entry.main, train_arguments(tmp_path, override), monkeypatch, capsys)
    assert line == message


def test_a_misspelled_group_is_matched_against_the_top_level_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = stopped_with(
        train_entry.main, train_arguments(tmp_path, "traner.max_epochs=3"), monkeypatch, capsys
    )
    head, _, allowed = line.partition(" Allowed keys: ")
    assert (
        head == "ConfigError: unknown key 'traner' in the top-level config; did you mean trainer?"
    )
    assert {"seed", "trainer", "data", "monitor", "hydra"} <= set(allowed.split(", "))


def test_a_new_named_entry_is_told_how_to_add_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = stopped_with(
        train_entry.main, train_arguments(tmp_path, "callbacks.my_timer=null"), monkeypatch, capsys
    )
    assert line.startswith(
        "ConfigError: unknown key 'callbacks.my_timer' in callbacks; allowed keys: "
    )
    assert line.endswith("; to add a new key, use +callbacks.my_timer=...")
    assert "model_checkpoint" in line


def test_eval_reports_a_misspelled_key_like_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["trainer.max_epoch=3", "ckpt_path=any.ckpt", f"hydra.run.dir={tmp_path}"]
    assert stopped_with(eval_entry.main, arguments, monkeypatch, capsys) == MAX_EPOCH_MESSAGE


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "trainer.precision=8",
            "ConfigError: 'trainer.precision' = 8 has the wrong type for pytorch_lightning.Trainer: "
            "expected one of 64, 32, 16, 'transformer-engine', 'transformer-engine-float16', "
            "'16-true', '16-mixed', 'bf16-true', 'bf16-mixed', '32-true', '64-true', "
            "'64', '32', '16', 'bf16' or None",
        ),
        (
            "trainer.max_epochs=abc",
            "ConfigError: 'trainer.max_epochs' = 'abc' has the wrong type for "
            "pytorch_lightning.Trainer: expected int or None",
        ),
        (
            "trainer.gradient_clip_val=high",
            "ConfigError: 'trainer.gradient_clip_val' = 'high' has the wrong type for "
            "pytorch_lightning.Trainer: expected int, float or None",
        ),
    ],
)
def test_a_wrong_type_for_a_union_lists_what_it_may_be(
    override: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = stopped_with(train_entry.main, train_arguments(tmp_path, override), monkeypatch, capsys)
    assert line == message


@pytest.mark.parametrize(
    ("seed", "shown"),
    [("abc", "'abc'"), ("-1", "-1"), ("4294967296", "4294967296"), ("1.5", "1.5")],
)
def test_a_bad_seed_is_reported_as_seed_before_anything_uses_it(
    seed: str,
    shown: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = stopped_with(
        train_entry.main, train_arguments(tmp_path, f"seed={seed}"), monkeypatch, capsys
    )
    assert line == SEED_MESSAGE + shown
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_value_error_of_our_constructor_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = stopped_with(
        train_entry.main, train_arguments(tmp_path, "data.batch_size=0"), monkeypatch, capsys
    )
    assert line == "ValueError: data.batch_size must be a positive integer, got 0"


def test_a_nan_loss_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = train_arguments(
        tmp_path,
        "data.source._target_=corrupt_sources.OverflowInputs",
        "~data.source.n_samples",
        "~data.source.noise",
        "~data.source.val_fraction",
        "~data.source.test_fraction",
        "data.batch_size=8",
        "++trainer.num_sanity_val_steps=0",
    )
    line = stopped_with(train_entry.main, arguments, monkeypatch, capsys)
    assert line.startswith("NonFiniteLossError: train loss term 'loss' is nan at global step ")


def test_an_unexpected_error_keeps_its_traceback_and_the_task_sees_the_users_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "weaksup",
            *train_arguments(tmp_path, "data.source._target_=test_cli_errors.ExplodingSource"),
        ],
    )
    with pytest.raises(InstantiationException) as raised:
        train_entry.main()
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert str(raised.value.__cause__) == f"source broke; {FULL_ERROR}=None"
    assert os.environ.get(FULL_ERROR) is None


def test_full_error_lets_our_errors_escape_with_their_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FULL_ERROR, "1")
    monkeypatch.setattr(sys, "argv", ["weaksup", *train_arguments(tmp_path, "trainer.max_epoch=3")])
    with pytest.raises(ConfigError) as raised:
        train_entry.main()
    assert f"ConfigError: {raised.value}" == MAX_EPOCH_MESSAGE
    assert isinstance(raised.value.__cause__, ConfigCompositionException)  # Hydra's, chained

    monkeypatch.setattr(sys, "argv", ["weaksup", *train_arguments(tmp_path, "seed=-1")])
    with pytest.raises(
        ConfigError, match=r"^'seed' must be an integer from 0 to 4294967295, got -1$"
    ):
        train_entry.main()
    assert os.environ[FULL_ERROR] == "1"


def test_a_failing_multirun_job_makes_the_sweep_exit_1_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["-m", "seed=-1", f"hydra.sweep.dir={tmp_path / 'sweep'}", *QUIET_OVERRIDES]
    assert stopped_with(train_entry.main, arguments, monkeypatch, capsys) == SEED_MESSAGE + "-1"


def test_a_misspelled_key_in_a_multirun_is_reported_before_any_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "sweep"
    arguments = ["-m", "seed=1,2", "trainer.max_epoch=3,4", f"hydra.sweep.dir={sweep_dir}"]
    assert stopped_with(train_entry.main, arguments, monkeypatch, capsys) == MAX_EPOCH_MESSAGE
    assert not list(sweep_dir.glob("*/metrics.json"))
