"""Run folders through `weaksup-train`: a true last.ckpt, one run per folder, checked resumes,
crash-safe writes, and no checkpoint after a non-finite loss."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback
from pytorch_lightning.loggers import CSVLogger

from weaksup.build import build_datamodule, build_method, build_trainer
from weaksup.checkpoints import CheckpointError, read_checkpoint
from weaksup.config.validation import ConfigError, validate_config
from weaksup.files import atomic_write, atomic_write_text
from weaksup.resume import RESUMABLE_KEYS, check_resumed_config, config_changes
from weaksup.run_folder import LOCK_FILE
from weaksup.train import main

from conftest import QUIET_OVERRIDES, compose_config

# Two moons: 600 training examples in batches of 64 -> 10 steps per epoch.
STEPS_PER_EPOCH = 10


def _args(run_dir: Path, *overrides: str) -> list[str]:
    return [f"hydra.run.dir={run_dir}", *QUIET_OVERRIDES, *overrides]


def _copy_run(source: Path, target: Path) -> None:
    shutil.copytree(source, target)


# Tests that resume a copy of the shared run: Lightning warns that the checkpoint folder moved.
moved_run = pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")


def _epoch_and_step(path: Path) -> tuple[int, int]:
    content = read_checkpoint(path)
    return int(content["epoch"]), int(content["global_step"])


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 epochs whose validation accuracy never improves after epoch 0 (lr too small to move)."""
    run_dir = tmp_path_factory.mktemp("plateau")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            sys,
            "argv",
            ["weaksup-train", *_args(run_dir, "optimizer.lr=1e-12", "trainer.max_epochs=3")],
        )
        main()
    return run_dir


def test_last_checkpoint_holds_the_final_epoch_when_the_score_stops_improving(
    plateau_run: Path,
) -> None:
    checkpoints = plateau_run / "checkpoints"
    assert [path.name for path in sorted(checkpoints.glob("best-*.ckpt"))] == ["best-epoch000.ckpt"]
    assert _epoch_and_step(checkpoints / "last.ckpt") == (2, 3 * STEPS_PER_EPOCH)
    results = json.loads((plateau_run / "metrics.json").read_text())
    assert results["epochs"] == 3 and results["global_step"] == 3 * STEPS_PER_EPOCH


def test_fresh_run_refuses_a_folder_with_results_and_leaves_them(
    plateau_run: Path, run_entry_point
) -> None:
    before = {name: (plateau_run / name).read_bytes() for name in ("metrics.json", "config.yaml")}
    last_before = (plateau_run / "checkpoints" / "last.ckpt").read_bytes()
    result = run_entry_point(main, *_args(plateau_run, "trainer.max_epochs=1"))
    assert result.code != 0
    assert "holds the results of an earlier run" in result.err
    assert "resume=auto" in result.err and "hydra.run.dir" in result.err
    for name, content in before.items():
        assert (plateau_run / name).read_bytes() == content
    assert (plateau_run / "checkpoints" / "last.ckpt").read_bytes() == last_before
    assert not (plateau_run / LOCK_FILE).exists()


@moved_run
def test_extending_a_finished_run_trains_only_the_new_epochs(
    plateau_run: Path, tmp_path: Path, run_entry_point
) -> None:
    run_dir = tmp_path / "extended"
    _copy_run(plateau_run, run_dir)
    result = run_entry_point(
        main, *_args(run_dir, "optimizer.lr=1e-12", "trainer.max_epochs=4", "resume=auto")
    )
    assert result.code == 0, result.err
    assert _epoch_and_step(run_dir / "checkpoints" / "last.ckpt") == (3, 4 * STEPS_PER_EPOCH)
    # the resumed part trained one epoch only: epoch 3, steps 30-39
    rows = [
        row.split(",") for row in (run_dir / "csv/version_1/metrics.csv").read_text().splitlines()
    ]
    epoch, step, loss = (rows[0].index(name) for name in ("epoch", "step", "train/loss_step"))
    trained = [(int(row[epoch]), int(row[step])) for row in rows[1:] if row[loss]]
    assert {epoch for epoch, _ in trained} == {3}
    assert min(step for _, step in trained) == 3 * STEPS_PER_EPOCH


def _copy_run(source: Path, target: Path) -> None:
    shutil.copytree(source, target)


# Tests that resume a copy of the shared run: Lightning warns that the checkpoint folder moved.
moved_run = pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")


@moved_run
def test_resume_with_a_changed_learning_rate_stops_unless_accepted(
    plateau_run: Path, tmp_path: Path, run_entry_point
) -> None:
    run_dir = tmp_path / "changed"
    _copy_run(plateau_run, run_dir)
    refused = run_entry_point(
        main, *_args(run_dir, "optimizer.lr=0.5", "trainer.max_epochs=4", "resume=auto")
    )
    assert refused.code != 0
    assert "optimizer.lr: 1e-12 -> 0.5" in refused.err
    assert "resume_accept=[optimizer.lr]" in refused.err
    assert _epoch_and_step(run_dir / "checkpoints" / "last.ckpt") == (2, 3 * STEPS_PER_EPOCH)

    accepted = run_entry_point(
        main,
        *_args(
            run_dir,
            "optimizer.lr=0.5",
            "trainer.max_epochs=4",
            "resume=auto",
            "resume_accept=[optimizer.lr]",
        ),
    )
    assert accepted.code == 0, accepted.err
    optimizer_state = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["optimizer_states"][0]
    assert [group["lr"] for group in optimizer_state["param_groups"]] == [0.5]


@moved_run
def test_corrupt_last_checkpoint_names_the_file_and_resume_newest_continues(
    plateau_run: Path, tmp_path: Path, run_entry_point
) -> None:
    run_dir = tmp_path / "corrupt"
    _copy_run(plateau_run, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a truncated file
    failed = run_entry_point(
        main, *_args(run_dir, "optimizer.lr=1e-12", "trainer.max_epochs=4", "resume=auto")
    )
    assert failed.code != 0
    assert f"checkpoint {last} cannot be read" in failed.err
    assert "resume=newest" in failed.err

    continued = run_entry_point(
        main, *_args(run_dir, "optimizer.lr=1e-12", "trainer.max_epochs=4", "resume=newest")
    )
    assert continued.code == 0, continued.err
    # best-epoch000.ckpt (the newest that loads) was at step 10; epochs 1-3 were trained again
    assert _epoch_and_step(last) == (3, 4 * STEPS_PER_EPOCH)


def test_a_second_run_in_a_locked_folder_refuses(tmp_path: Path, run_entry_point) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = tmp_path / "busy"
        run_dir.mkdir()
        (run_dir / LOCK_FILE).write_text(
            json.dumps({"host": socket.gethostname(), "pid": holder.pid, "started": time.time()})
        )
        result = run_entry_point(main, *_args(run_dir, "trainer.max_epochs=1"))
        assert result.code != 0
        assert f"another weaksup run (process {holder.pid} on" in result.err
        assert not (run_dir / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the next run takes the folder over
    result = run_entry_point(main, *_args(run_dir, "trainer.max_epochs=1"))
    assert result.code == 0, result.err
    assert (run_dir / "metrics.json").is_file() and not (run_dir / LOCK_FILE).exists()


def test_config_error_leaves_no_run_folder(tmp_path: Path, run_entry_point) -> None:
    run_dir = tmp_path / "never"
    result = run_entry_point(main, *_args(run_dir, "optimizer.lr=-0.1"))
    assert result.code != 0 and "'optimizer.lr' must be > 0" in result.err
    assert not run_dir.exists()


def test_zero_epochs_stop_at_start(tmp_path: Path, run_entry_point) -> None:
    result = run_entry_point(main, *_args(tmp_path / "zero", "trainer.max_epochs=0"))
    assert result.code != 0 and "trainer.max_epochs=0 trains nothing" in result.err
    assert not (tmp_path / "zero").exists()


def test_misspelled_monitor_stops_before_the_first_training_step(
    tmp_path: Path, run_entry_point
) -> None:
    run_dir = tmp_path / "monitor"
    result = run_entry_point(main, *_args(run_dir, "monitor.metric=val/acx"))
    assert result.code != 0
    assert "monitor.metric='val/acx' is not logged by this method; did you mean val/acc?" in (
        result.err
    )
    assert not list(run_dir.glob("checkpoints/*.ckpt"))
    assert (
        not (run_dir / "csv" / "version_0" / "metrics.csv").is_file()
        or "train/loss" not in (run_dir / "csv" / "version_0" / "metrics.csv").read_text()
    )


def test_fast_dev_run_writes_no_checkpoint(tmp_path: Path, run_entry_point) -> None:
    run_dir = tmp_path / "fdr"
    result = run_entry_point(main, *_args(run_dir, "debug=fdr"))
    assert result.code == 0, result.err
    assert not (run_dir / "checkpoints").exists() or not list((run_dir / "checkpoints").iterdir())


@pytest.mark.parametrize(
    "schedule",
    [("trainer.check_val_every_n_epoch=2",), ("+trainer.limit_val_batches=0",)],
    ids=["val-every-2", "no-val"],
)
def test_no_checkpoint_follows_a_non_finite_loss(
    tmp_path: Path, run_entry_point, schedule: tuple[str, ...]
) -> None:
    run_dir = tmp_path / "diverged"
    result = run_entry_point(
        main,
        *_args(run_dir, "optimizer.lr=1e30", "trainer.max_epochs=3", *schedule),
        "trainer.log_every_n_steps=4",  # read back every 4 steps: the NaN at step 1 is found at 3
    )
    assert result.code != 0
    assert "NonFiniteLossError: train loss term 'loss' is nan at global step 1" in result.err
    for path in run_dir.glob("checkpoints/*.ckpt"):  # none, or only finite ones
        for name, tensor in read_checkpoint(path)["state_dict"].items():
            assert torch.isfinite(tensor).all(), (path, name)
    assert not list(run_dir.glob("checkpoints/*.ckpt"))


def test_metrics_json_stays_valid_json_with_non_finite_values(
    tmp_path: Path, run_entry_point
) -> None:
    run_dir = tmp_path / "unchecked"
    result = run_entry_point(
        main,
        *_args(
            run_dir,
            "optimizer.lr=1e30",
            "trainer.max_epochs=1",
            "method.check_finite_loss=false",
            "callbacks.model_checkpoint=null",
            "callbacks.last_checkpoint=null",
        ),
    )
    assert result.code == 0, result.err
    text = (run_dir / "metrics.json").read_text()
    results = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert results["test"]["test/loss"] is None  # NaN is written as null


def test_train_step_values_are_those_of_the_step_they_are_written_at(tmp_path: Path) -> None:
    class RecordLosses(Callback):
        def __init__(self) -> None:
            self.by_step: dict[int, float] = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            self.by_step[step] = float(outputs["loss"])

    cfg = compose_config(
        "train",
        [
            f"paths.output_dir={tmp_path}",
            *QUIET_OVERRIDES,
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=3",
            "callbacks=none",
        ],
    )
    validate_config(cfg)
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    recorder = RecordLosses()
    trainer = build_trainer(cfg, [recorder], [CSVLogger(tmp_path, name="csv")])
    trainer.fit(model, datamodule=datamodule)
    rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    step_column, loss_column = header.index("step"), header.index("train/loss_step")
    written = {
        int(row.split(",")[step_column]): float(row.split(",")[loss_column])
        for row in rows[1:]
        if row.split(",")[loss_column]
    }
    assert sorted(written) == [2, 5, 8, 11, 14, 17]  # (step + 1) % 3 == 0, 20 steps
    for step, value in written.items():
        assert value == pytest.approx(recorder.by_step[step], rel=1e-6), step


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "metrics.json", '{"old": 1}\n')
    with pytest.raises(RuntimeError, match="killed"), atomic_write(target) as stream:
        stream.write('{"new": ')
        raise RuntimeError("killed")
    assert target.read_text() == '{"old": 1}\n'
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_a_kill_during_checkpoint_writes_never_leaves_a_truncated_checkpoint(
    tmp_path: Path,
) -> None:
    """kill -9 a process that keeps rewriting a large checkpoint; what is left always loads."""
    target = tmp_path / "last.ckpt"
    writer = textwrap.dedent(
        f"""
        import torch
        from weaksup.checkpoints import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        state = {{"state_dict": {{"w": torch.randn(4_000_000)}}, "global_step": 0}}
        step = 0
        while True:
            step += 1
            state["global_step"] = step
            io.save_checkpoint(state, {str(target)!r})
            print(step, flush=True)
        """
    )
    environment = {**os.environ, "TMPDIR": str(tmp_path / "no-such-folder")}
    process = subprocess.Popen(
        [sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert process.stdout is not None
        for _ in range(2):  # at least two complete saves, then kill it in the middle of others
            process.stdout.readline()
        time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    content = read_checkpoint(target)
    assert content["global_step"] >= 2 and content["state_dict"]["w"].shape == (4_000_000,)
    assert [path.name for path in tmp_path.glob("*.ckpt")] == ["last.ckpt"]


def test_read_checkpoint_names_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} cannot be read"):
        read_checkpoint(path)


def test_each_method_brings_its_own_default_loss(tmp_path: Path, run_entry_point) -> None:
    """`method=mil data=mnist_bags` runs without `loss=` (MIL defaults to bag_bce, not ce)."""
    run_dir = tmp_path / "mil"
    result = run_entry_point(
        main,
        *_args(
            run_dir,
            "method=mil",
            "data=mnist_bags",
            "backbone=lenet",
            "trainer.max_epochs=1",
            "data.source.num_train_bags=16",
            "data.source.num_val_bags=16",
            "data.source.num_test_bags=16",
        ),
    )
    assert result.code == 0, result.err
    config = (run_dir / "config.yaml").read_text()
    assert "_target_: weaksup.losses.bag.BagBCELoss" in config
    assert 0.0 <= json.loads((run_dir / "metrics.json").read_text())["test"]["test/auc"] <= 1.0


def test_callbacks_may_change_on_resume_but_not_the_reseeding() -> None:
    stored = {"callbacks": {"reseed": {"seed": 0}, "model_checkpoint": {"save_top_k": 1}}}
    requested = {"callbacks": {"reseed": None, "model_checkpoint": {"save_top_k": 3}}}
    changes = config_changes(stored, requested, RESUMABLE_KEYS)
    assert [change.key for change in changes] == ["callbacks.reseed", "callbacks.reseed.seed"]
    with pytest.raises(ConfigError, match=r"callbacks.reseed.seed: 0 -> \(absent\)"):
        check_resumed_config(stored, requested, [], Path("last.ckpt"))
    accepted = check_resumed_config(stored, requested, ["callbacks.reseed"], Path("last.ckpt"))
    assert [change.key for change in accepted] == ["callbacks.reseed", "callbacks.reseed.seed"]
