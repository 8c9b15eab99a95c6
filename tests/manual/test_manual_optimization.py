"""Manual optimisation keeps Lightning's promises: clipping, schedulers, finite losses, iterations,
EMA, DDP and resume, with a real Trainer and real configs (`manual_probe.TwoNetworkProbe`: two
networks, two optimizers, one stepped from a loss and one from `torch.autograd.grad`).

Two moons: 600 training examples in batches of 100, so 6 iterations (12 optimizer steps) per epoch.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from manual_probe import PROBE_TARGET, TwoNetworkProbe, WeightRecorder
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from weaksup.build import build_datamodule, build_method, build_trainer
from weaksup.checkpoints import read_checkpoint
from weaksup.config.validation import ConfigError
from weaksup.methods.base import NonFiniteLossError
from weaksup.train import train

from conftest import ComposeFn

ITERATIONS_PER_EPOCH = 6
PROBE = (
    "method=supervised",
    f"++method._target_={PROBE_TARGET}",
    "method.scheduler_interval=step",
    "data.batch_size=100",
    "backbone.hidden_sizes=[16]",
    "logger=none",
)
# A real GradScaler with fp16 autocast on the CPU (Lightning refuses `precision=16-mixed` on a
# CPU by name, not the plugin), so the AMP paths run here without a GPU.
CPU_FP16 = (
    "~trainer.precision",
    "++trainer.plugins=[{_target_: pytorch_lightning.plugins.precision.MixedPrecision, "
    "precision: 16-mixed, device: cpu, scaler: {_target_: torch.amp.GradScaler, device: cpu}}]",
)
RECORDING_SGD = ("optimizer=sgd", "++optimizer._target_=manual_probe.NormRecordingSGD")


def _fit(cfg: DictConfig, *callbacks: pl.Callback) -> tuple[TwoNetworkProbe, pl.Trainer]:
    """Fit the probe with the Trainer `weaksup.build` makes for it (as `weaksup-train` does)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    trainer = build_trainer(cfg, list(callbacks), [], model)
    trainer.fit(model, datamodule=datamodule)
    return model, trainer


def _all_finite(state_dict: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in state_dict.values() if t.is_floating_point())


# ---- 1. gradient clipping --------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["norm", "value"])
@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed-cpu"])
def test_gradient_clipping_limits_the_applied_gradients(
    compose_train: ComposeFn, precision: str, algorithm: str
) -> None:
    clip = 0.05
    amp = CPU_FP16 if precision == "16-mixed-cpu" else (f"trainer.precision={precision}",)
    cfg = compose_train(
        *PROBE,
        *RECORDING_SGD,
        *amp,
        "optimizer.lr=0.5",
        f"trainer.gradient_clip_val={clip}",
        f"trainer.gradient_clip_algorithm={algorithm}",
        "trainer.max_epochs=1",
    )
    model, trainer = _fit(cfg)

    assert trainer.gradient_clip_val is None  # Lightning's own clipping is off; the method clips
    column = 0 if algorithm == "norm" else 1
    before = [measured[column] for measured in model.before_clipping]
    applied = [
        measured[column] for optimizer in trainer.optimizers for measured in optimizer.applied
    ]
    assert max(before) > 2 * clip  # clipping had something to do ...
    assert max(applied) <= clip * (1 + 1e-5)  # ... and every applied step was clipped
    if precision != "16-mixed-cpu":  # AMP may skip steps with overflowing gradients
        assert len(applied) == 2 * ITERATIONS_PER_EPOCH


def test_gradient_clipping_clips_the_unscaled_gradients_under_16_mixed(
    compose_train: ComposeFn,
) -> None:
    """The clip value applies to the true gradients, not to the ones scaled by 2**16."""
    cfg = compose_train(
        *PROBE, *RECORDING_SGD, *CPU_FP16, "trainer.gradient_clip_val=1.0", "trainer.max_epochs=1"
    )
    model, trainer = _fit(cfg)
    applied = [norm for optimizer in trainer.optimizers for norm, _ in optimizer.applied]
    before = [norm for norm, _ in model.before_clipping]
    # Unscaled gradient norms of a 2-class cross-entropy are below ~10; scaled ones are ~1e4.
    assert max(before) < 100
    assert min(applied) > 0.01 and max(applied) <= 1.0 + 1e-5


def test_gradients_too_small_for_half_precision_survive_loss_gradients_under_16_mixed(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    """`loss_gradients` differentiates the scaled loss, as `manual_backward` does: gradients of
    about 1e-9, which are 0 in float16, reach the optimizer with the values a float32 run has."""
    tiny = ("++method.auxiliary_loss_factor=1e-7", "trainer.max_epochs=1")
    applied = {}
    for precision, amp in (("32", ("trainer.precision=32",)), ("16-mixed-cpu", CPU_FP16)):
        cfg = compose_train(*PROBE, *RECORDING_SGD, *amp, *tiny, output_dir=tmp_path / precision)
        _, trainer = _fit(cfg)
        applied[precision] = [norm for norm, _ in trainer.optimizers[1].applied]
    reference, half = applied["32"], applied["16-mixed-cpu"]
    assert 0 < reference[0] < 1e-6  # the first step: same weights, same batch
    assert half[0] == pytest.approx(reference[0], rel=0.05)
    assert all(norm > 0 for norm in half)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gradient_clipping_under_16_mixed_on_cuda(compose_train: ComposeFn) -> None:
    clip = 0.05
    cfg = compose_train(
        *PROBE,
        *RECORDING_SGD,
        "trainer=gpu",
        "trainer.precision=16-mixed",
        "optimizer.lr=0.5",
        f"trainer.gradient_clip_val={clip}",
        "trainer.max_epochs=1",
    )
    model, trainer = _fit(cfg)
    applied = [norm for optimizer in trainer.optimizers for norm, _ in optimizer.applied]
    assert max(norm for norm, _ in model.before_clipping) > 2 * clip
    assert applied and max(applied) <= clip * (1 + 1e-3)
    for _, network_applied, auxiliary_applied in model.step_results:
        assert isinstance(network_applied, bool) and isinstance(auxiliary_applied, bool)


def test_accumulate_grad_batches_with_a_manual_method_is_a_config_error(
    compose_train: ComposeFn,
) -> None:
    cfg = compose_train(*PROBE, "trainer.accumulate_grad_batches=2")
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    with pytest.raises(ConfigError) as error:
        build_trainer(cfg, [], [], model)
    assert str(error.value) == (
        "trainer.accumulate_grad_batches=2 cannot be used with method TwoNetworkProbe: it steps "
        "its optimizers itself (manual optimisation); set trainer.accumulate_grad_batches=1 "
        "(a larger data.batch_size does the same)"
    )


def test_an_unknown_gradient_clip_algorithm_is_a_config_error(compose_train: ComposeFn) -> None:
    cfg = compose_train(*PROBE, "trainer.gradient_clip_algorithm=max")
    model = build_method(cfg, build_datamodule(cfg).metadata)
    with pytest.raises(ConfigError) as error:
        build_trainer(cfg, [], [], model)
    assert str(error.value) == "trainer.gradient_clip_algorithm='max' is not one of: norm, value"


def test_ema_decay_outside_the_unit_interval_is_a_config_error(compose_train: ComposeFn) -> None:
    cfg = compose_train(*PROBE, "++method.ema_decay=1.0")
    datamodule = build_datamodule(cfg)
    with pytest.raises(ConfigError, match=r"method\.ema_decay=1\.0 is not an EMA decay"):
        build_method(cfg, datamodule.metadata)


# ---- 2. schedulers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "expected_steps"), [("step", 2 * 6), ("epoch", 2)])
def test_schedulers_step_once_per_iteration_or_epoch(
    compose_train: ComposeFn, tmp_path: Path, interval: str, expected_steps: int
) -> None:
    results = train(
        compose_train(
            *PROBE,
            "scheduler=step",
            "scheduler.step_size=5",
            f"method.scheduler_interval={interval}",
            "trainer.max_epochs=2",
        )
    )
    assert results["iterations"] == 2 * ITERATIONS_PER_EPOCH
    last = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    schedulers, optimizers = last["lr_schedulers"], last["optimizer_states"]
    assert len(schedulers) == len(optimizers) == 2
    for scheduler, optimizer in zip(schedulers, optimizers, strict=True):
        assert scheduler["last_epoch"] == expected_steps
        # StepLR(step_size=5, gamma=0.1) from lr 1e-3
        expected_lr = 1e-3 * 0.1 ** (expected_steps // 5)
        assert optimizer["param_groups"][0]["lr"] == pytest.approx(expected_lr, rel=1e-9)


def test_schedulers_skip_the_iterations_amp_skipped(compose_train: ComposeFn) -> None:
    """Under fp16 with a GradScaler, a step with overflowing gradients is skipped (and the
    scale halved); that optimizer's scheduler does not step for it, the other's does."""
    cfg = compose_train(
        *PROBE,
        *CPU_FP16,
        "scheduler=step",
        "++method.overflow_at_iteration=3",
        "trainer.max_epochs=1",
    )
    model, trainer = _fit(cfg)
    network_scheduler, auxiliary_scheduler = (c.scheduler for c in trainer.lr_scheduler_configs)
    assert [iteration for iteration, *_ in model.step_results] == list(range(6))
    network_applied = [applied for _, applied, _ in model.step_results]
    auxiliary_applied = [applied for _, _, applied in model.step_results]
    assert network_applied == [True, True, True, False, True, True]  # the overflow was skipped
    assert auxiliary_applied == [True] * ITERATIONS_PER_EPOCH
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**15  # halved once, from 2**16
    # each scheduler counts exactly the applied steps of its optimizer
    assert network_scheduler.last_epoch == ITERATIONS_PER_EPOCH - 1
    assert auxiliary_scheduler.last_epoch == ITERATIONS_PER_EPOCH
    assert trainer.global_step == 2 * ITERATIONS_PER_EPOCH  # Lightning counts the calls


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_schedulers_skip_the_iterations_amp_skipped_on_cuda(compose_train: ComposeFn) -> None:
    cfg = compose_train(
        *PROBE,
        "trainer=gpu",
        "trainer.precision=16-mixed",
        "scheduler=step",
        "++method.overflow_at_iteration=3",
        "trainer.max_epochs=1",
    )
    model, trainer = _fit(cfg)
    network_scheduler, auxiliary_scheduler = (c.scheduler for c in trainer.lr_scheduler_configs)
    network_applied = [applied for _, applied, _ in model.step_results]
    auxiliary_applied = [applied for _, _, applied in model.step_results]
    assert network_applied[3] is False
    assert network_scheduler.last_epoch == sum(network_applied) < ITERATIONS_PER_EPOCH
    assert auxiliary_scheduler.last_epoch == sum(auxiliary_applied)


# ---- 3. finite losses ----------------------------------------------------------------------------


@pytest.mark.filterwarnings(  # saving the state after each batch's steps is what we want
    "ignore:Using ModelCheckpoint with manual optimization and every_n_train_steps"
)
def test_no_optimizer_step_follows_a_nan_loss(compose_train: ComposeFn, tmp_path: Path) -> None:
    cfg = compose_train(*PROBE, "++method.nan_at_iteration=3", "trainer.max_epochs=2")
    every_step = ModelCheckpoint(
        dirpath=tmp_path / "every_step", every_n_train_steps=1, save_top_k=-1, monitor=None
    )
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    trainer = build_trainer(cfg, [every_step], [], model)
    with pytest.raises(NonFiniteLossError) as error:
        trainer.fit(model, datamodule=datamodule)

    # Terms are recorded at Lightning's global step: 3 iterations x 2 optimizer steps.
    assert str(error.value).startswith(
        "train loss term 'auxiliary_loss' is nan at global step 6 (epoch 0); training stopped"
    )
    # Not even the network's step of that batch ran: the weights are those of iteration 2 ...
    assert _all_finite(model.state_dict())
    saved = sorted((tmp_path / "every_step").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert [read_checkpoint(p)["global_step"] for p in saved] == [2, 4, 6]
    newest = read_checkpoint(saved[-1])["state_dict"]
    for name, parameter in model.named_parameters():  # (batch norm statistics moved forward)
        torch.testing.assert_close(parameter.detach(), newest[name], rtol=0, atol=0)
    # ... and no checkpoint holds non-finite weights.
    assert all(_all_finite(read_checkpoint(p)["state_dict"]) for p in saved)


# ---- 4. iterations -------------------------------------------------------------------------------


def test_metrics_and_logs_count_one_iteration_per_batch(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    results = train(compose_train(*PROBE, "logger=csv", "trainer.max_epochs=2"))
    assert results["iterations"] == 2 * ITERATIONS_PER_EPOCH
    assert results["global_step"] == 2 * results["iterations"]  # two optimizers
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["iterations"] == results["iterations"]
    assert written["global_step"] == results["global_step"]
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as rows:
        steps = [int(row["step"]) for row in csv.DictReader(rows) if row.get("train/loss_step")]
    assert steps == list(range(2 * ITERATIONS_PER_EPOCH))  # one log row per batch


def test_max_steps_counts_optimizer_steps_of_a_two_optimizer_method(
    compose_train: ComposeFn,
) -> None:
    """`trainer.max_steps` is Lightning's count of `optimizer.step()` calls: 12 steps are 6
    iterations (one epoch) here; convert iterations to steps before handing it to Lightning."""
    results = train(compose_train(*PROBE, "++trainer.max_steps=12", "trainer.max_epochs=-1"))
    assert results["global_step"] == 12 and results["iterations"] == ITERATIONS_PER_EPOCH
    assert results["epochs"] == 1


def test_metrics_json_counts_iterations_for_an_automatic_method(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    results = train(
        compose_train(
            "method=supervised", "data.batch_size=100", "logger=none", "trainer.max_epochs=2"
        )
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["iterations"] == written["global_step"] == 2 * ITERATIONS_PER_EPOCH
    assert results["iterations"] == written["iterations"]


# ---- 5. EMA --------------------------------------------------------------------------------------


def test_ema_buffers_hold_the_hand_computed_average(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    decay = 0.9
    cfg = compose_train(*PROBE, f"++method.ema_decay={decay}", "++trainer.max_steps=4")
    recorder = WeightRecorder()
    model, trainer = _fit(cfg, recorder)
    trainer.save_checkpoint(tmp_path / "two_iterations.ckpt")
    stored = read_checkpoint(tmp_path / "two_iterations.ckpt")["state_dict"]

    initial, first, second = recorder.weights
    assert model.iteration == 2
    for name in initial:
        expected = (
            decay * (decay * initial[name] + (1 - decay) * first[name]) + (1 - decay) * second[name]
        )
        average = stored["weight_average." + name.replace(".", "/")]
        torch.testing.assert_close(average, expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(average, second[name])  # it is not just the live weights


def _test_split_loss(network: torch.nn.Module, cfg: DictConfig) -> float:
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            logits = network(batch.inputs)
            total += float(F.cross_entropy(logits, batch.targets, reduction="sum"))
            count += len(batch)
    return total / count


def test_a_checkpoint_is_evaluated_with_its_ema_weights(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    """What `weaksup-eval` does (build the method from the stored config, `load_state_dict`,
    `trainer.test`); its entry point refuses the probe, a class no shipped config names."""
    results = train(
        compose_train(*PROBE, "++method.ema_decay=0.9", "trainer.max_epochs=2", "test=false")
    )
    checkpoint = read_checkpoint(results["best_checkpoint"])
    run_cfg = OmegaConf.create(checkpoint["weaksup"]["config"])
    datamodule = build_datamodule(run_cfg)
    model = build_method(run_cfg, datamodule.metadata)
    model.load_state_dict(checkpoint["state_dict"])
    trainer = build_trainer(run_cfg, [], [], model)
    test_loss = trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/loss"]

    state = checkpoint["state_dict"]
    live = build_method(run_cfg, datamodule.metadata).network
    live.load_state_dict(
        {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}
    )
    averaged = build_method(run_cfg, datamodule.metadata).network
    averaged.load_state_dict(
        {
            k.removeprefix("weight_average.").replace("/", "."): v
            for k, v in state.items()
            if k.startswith("weight_average.")
        }
    )
    assert test_loss == pytest.approx(_test_split_loss(averaged, run_cfg), abs=1e-5)
    assert abs(test_loss - _test_split_loss(live, run_cfg)) > 1e-3


def test_resume_restores_weights_ema_optimizers_and_schedulers_exactly(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    overrides = (
        *PROBE,
        "optimizer=sgd",
        "scheduler=step",
        "scheduler.step_size=4",
        "++method.ema_decay=0.9",
        "backbone.dropout=0.2",  # dropout: the RNG must match too
    )
    full = train(compose_train(*overrides, "trainer.max_epochs=2", output_dir=tmp_path / "full"))
    interrupted = tmp_path / "interrupted"
    train(compose_train(*overrides, "trainer.max_epochs=1", output_dir=interrupted))
    resumed = train(
        compose_train(*overrides, "trainer.max_epochs=2", "resume=auto", output_dir=interrupted)
    )
    assert full["iterations"] == resumed["iterations"] == 2 * ITERATIONS_PER_EPOCH
    assert full["global_step"] == resumed["global_step"] == 4 * ITERATIONS_PER_EPOCH

    expected = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    actual = read_checkpoint(interrupted / "checkpoints" / "last.ckpt")
    assert any(name.startswith("weight_average.") for name in expected["state_dict"])
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(actual["state_dict"][name], tensor, rtol=0, atol=0)
    assert len(expected["optimizer_states"]) == 2
    for stored, restored in zip(
        expected["optimizer_states"], actual["optimizer_states"], strict=True
    ):
        assert stored["param_groups"] == restored["param_groups"]
        for index, state in stored["state"].items():
            for key, value in state.items():
                torch.testing.assert_close(restored["state"][index][key], value, rtol=0, atol=0)
    assert expected["lr_schedulers"] == actual["lr_schedulers"]
    assert resumed["test"] == full["test"]


# ---- 6. DDP --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ddp_cpu_with_two_optimizers_keeps_the_ranks_identical(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    results = train(
        compose_train(
            *PROBE,
            "trainer=ddp_cpu",
            "trainer.max_epochs=2",
            "++method.ema_decay=0.9",
            f"++method.weights_dir={weights_dir}",
        )
    )
    # Each rank sees half of the 600 examples: 3 iterations of 100 per epoch.
    assert results["iterations"] == 2 * 3 and results["global_step"] == 2 * 2 * 3
    rank0 = torch.load(weights_dir / "rank0.pt", weights_only=True)
    rank1 = torch.load(weights_dir / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() and "auxiliary.0.running_mean" in rank0
    for name, tensor in rank0.items():
        torch.testing.assert_close(rank1[name], tensor, rtol=0, atol=0)
    assert not torch.equal(rank0["network.head.weight"], rank0["weight_average.head/weight"])
    assert math.isfinite(results["test"]["test/loss"])
