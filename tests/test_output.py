"""What `weaksup-train` prints: plain progress lines without a terminal, no third-party chatter,
the W&B footer before the results, and the output folder as the last line.

Runs go through `weaksup.train.main` (real Hydra, real Trainer). Under pytest stdout is not a
terminal, which is exactly the CI / SLURM case the plain progress lines are for.
"""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import pytest
import wandb
import wandb.errors.term
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.loggers import WandbLogger

from weaksup.eval import main as eval_main
from weaksup.progress import PlainProgressBar, TerminalProgressBar, progress_bar
from weaksup.run_logging import QuietWandbLogger
from weaksup.train import main

from wandb_records import read_finished_run

# two_moons: 600 training samples in batches of 64.
STEPS_PER_EPOCH = 10
NUMBER = r"-?\d+(\.\d+)?(e[-+]\d+)?"
# Lightning and W&B messages that tell a weaksup user nothing (issue 13, "Output").
NOISE = (
    "💡 Tip",
    "[litlogger]",
    "[litmodels]",
    "Trainer already configured with model summary callbacks",
    "FLOPs",
    "v_num",
    "anonymous setting has no effect",
    "wandb.require('service')",
)


def _run_train(monkeypatch: pytest.MonkeyPatch, run_dir: Path, *overrides: str) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        ["weaksup-train", f"hydra.run.dir={run_dir}", "trainer.max_epochs=2", *overrides],
    )
    main()


def _last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def _assert_no_noise(text: str) -> None:
    for message in NOISE:
        assert message not in text, f"{message!r} printed"


def test_plain_progress_lines_and_output_folder_last_without_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    _run_train(monkeypatch, run_dir, "callbacks.progress_bar.every_n_steps=4")
    out, err = capfd.readouterr()

    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    pattern = (
        rf"epoch (?P<epoch>[12])/2 · step (?P<step>\d+) · train/loss_epoch {NUMBER} · "
        rf"val/loss {NUMBER} · val/acc {NUMBER} · \d+\.\d s"
    )
    # Mid-epoch lines carry the metrics logged so far (none before the first logging step).
    batch_pattern = (
        r"epoch [12]/2 · batch (?P<batch>[48])/10 · step (?P<step>\d+)( · .*)? · \d+\.\d s"
    )
    epochs = [re.fullmatch(pattern, line) for line in epoch_lines]
    batches = [re.fullmatch(batch_pattern, line) for line in epoch_lines]
    assert [(m["epoch"], m["step"]) for m in epochs if m] == [("1", "10"), ("2", "20")]
    assert [(m["batch"], m["step"]) for m in batches if m] == [
        ("4", "4"),
        ("8", "8"),
        ("4", "14"),
        ("8", "18"),
    ]
    assert len(epoch_lines) == 6, epoch_lines
    assert "\r" not in out + err
    assert "\x1b" not in out + err
    _assert_no_noise(out + err)
    assert "Trainable params" in out  # the model summary stays, without its FLOPs column
    assert "GPU available" in out + err  # Lightning's other messages still reach the user
    assert _last_line(out) == f"output folder: {run_dir}"


def test_eval_prints_no_tips_and_ends_with_its_output_folder(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # weaksup-eval's Trainer has no ModelCheckpoint: Lightning adds its own and, before the
    # filter, advertised litmodels as well as litlogger.
    _run_train(monkeypatch, tmp_path / "run", "trainer.max_epochs=1", "test=false")
    capfd.readouterr()
    eval_dir = tmp_path / "eval"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "weaksup-eval",
            f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
            f"hydra.run.dir={eval_dir}",
        ],
    )
    eval_main()
    out, err = capfd.readouterr()
    _assert_no_noise(out + err)
    assert "test/acc" in out
    assert "GPU available" in out + err
    assert _last_line(out) == f"output folder: {eval_dir}"


def test_terminal_bar_shows_no_logger_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `mode=rich` forces the terminal bar; Rich prints its final frame into the captured stream.
    run_dir = tmp_path / "run"
    _run_train(monkeypatch, run_dir, "callbacks.progress_bar.mode=rich", "test=false")
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out  # Lightning's Rich bar numbers epochs from 0
    assert "val/acc" in out
    assert "v_num" not in out
    assert _last_line(out) == f"output folder: {run_dir}"


def test_wandb_footer_comes_before_the_results_and_the_output_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for variable, value in {"WANDB_MODE": "offline", "WANDB_CONSOLE": "off"}.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("WANDB_SILENT")  # this test reads what W&B prints
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    # wandb prints its deprecation warnings once per process: forget earlier (silenced) ones.
    monkeypatch.setattr(wandb.errors.term, "_printed_messages", set())
    # One stream for both, in the order a terminal shows them (W&B writes to stderr).
    monkeypatch.setattr(sys, "stderr", sys.stdout)
    run_dir = tmp_path / "run"
    try:
        _run_train(monkeypatch, run_dir, "logger=wandb")
    finally:
        if wandb.run is not None:
            wandb.finish(exit_code=1)
    out = capsys.readouterr().out

    lines = [line for line in out.splitlines() if line.strip()]
    footer = next(i for i, line in enumerate(lines) if line.startswith("wandb: Run summary:"))
    results = next(i for i, line in enumerate(lines) if "weaksup results" in line)
    assert footer < results
    assert lines[-1] == f"output folder: {run_dir}"
    assert "wandb: Tracking run with wandb version" in out  # W&B's header stays
    _assert_no_noise(out)

    [log_file] = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    run = read_finished_run(log_file)
    assert run.exit_code == 0
    assert len(run.metric_values("val/acc")) == 2


def test_pickled_wandb_logger_prints_no_service_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Spawned DDP workers get the logger pickled; Lightning's pickling calls wandb.require."""
    monkeypatch.delenv("WANDB_SILENT")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    try:
        stock = WandbLogger(project="weaksup", save_dir=tmp_path / "stock")
        pickle.dumps(stock)
        stock.experiment.finish(exit_code=0)
        assert "wandb.require('service')` is a no-op" in capsys.readouterr().err  # the fault

        quiet = QuietWandbLogger(project="weaksup", save_dir=tmp_path / "quiet")
        assert "anonymous" not in quiet._wandb_init
        restored = pickle.loads(pickle.dumps(quiet))
        assert restored._id == quiet.experiment.id  # workers attach to the same run
        quiet.experiment.finish(exit_code=0)
        assert "no-op" not in capsys.readouterr().err
    finally:
        if wandb.run is not None:
            wandb.finish(exit_code=1)


def test_progress_bar_kind_follows_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.delenv("CI", raising=False)
    assert type(progress_bar()) is PlainProgressBar  # pytest's stdout is not a terminal
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert type(progress_bar()) is TerminalProgressBar
    assert isinstance(progress_bar(), RichProgressBar)
    monkeypatch.setenv("CI", "true")  # CI consoles are logs, even behind a pseudo-terminal
    assert type(progress_bar()) is PlainProgressBar
    assert type(progress_bar(mode="rich")) is TerminalProgressBar
    assert progress_bar(mode="plain", every_n_steps=7).every_n_steps == 7


def test_unknown_progress_mode_stops_with_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _run_train(monkeypatch, tmp_path / "run", "callbacks.progress_bar.mode=fancy")
    assert stopped.value.code == 1
    assert (
        "ConfigError: callbacks.progress_bar.mode must be one of auto, rich, plain, got 'fancy'"
        in capfd.readouterr().err
    )
