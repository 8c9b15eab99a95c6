"""`method=smpl` and `method=mpl` through `weaksup-train`: the two-update iteration done right,
the named switches, the pictures, exact resume, flat memory and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from weaksup.checkpoints import read_checkpoint
from weaksup.train import main

from conftest import QUIET_OVERRIDES, read_csv_rows

TWO_MOONS = (
    "data=two_moons",
    "data.num_labeled=6",
    "data.batch_size=6",
    "data.unlabeled_ratio=50",  # 300 unlabeled points per step: 2 steps per epoch
    "backbone=mlp",
    "backbone.hidden_sizes=[8,8]",
    "optimizer=sgd",
    "optimizer.lr=0.05",
    "method.uda_warmup_steps=4",
)


def _args(run_dir: Path, method: str, *overrides: str) -> list[str]:
    return [
        f"hydra.run.dir={run_dir}",
        *QUIET_OVERRIDES,
        f"method={method}",
        *TWO_MOONS,
        *overrides,
    ]


def _train(monkeypatch: pytest.MonkeyPatch, run_dir: Path, method: str, *overrides: str) -> dict:
    monkeypatch.setattr("sys.argv", ["weaksup-train", *_args(run_dir, method, *overrides)])
    main()
    return json.loads((run_dir / "metrics.json").read_text())


def _last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


@pytest.mark.parametrize("method", ["smpl", "mpl"])
def test_trains_through_the_entry_point_with_its_pictures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    results = _train(monkeypatch, tmp_path, method, "trainer.max_epochs=4")
    assert 0.5 <= results["test"]["test/acc"] <= 1.0
    assert results["iterations"] == 4 * 2
    header = (tmp_path / "csv/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    expected = {"train/loss_epoch", "train/consistency_epoch", "train/mask_rate_epoch"}
    expected |= {"train/reward_epoch", "train/labeled_ce_new_epoch", "val/acc", "test/acc"}
    assert expected <= set(header), expected - set(header)
    for figure in ("augmentations.png", "decision_boundary.png"):
        assert (tmp_path / figure).stat().st_size > 5_000, figure
    weights = _last_weights(tmp_path)
    assert any("average" in name or "ema" in name for name in weights), "EMA not in checkpoint"
    assert all(
        torch.isfinite(value).all() for value in weights.values() if value.is_floating_point()
    )


@pytest.mark.parametrize("method", ["smpl", "mpl"])
def test_weaksup_eval_scores_the_checkpoint_with_its_ema_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_entry_point, method: str
) -> None:
    """The EMA buffers are in the checkpoint: `weaksup-eval` needs nothing else and gives the
    test score of training, which the live weights do not."""
    from weaksup.eval import main as eval_main

    results = _train(monkeypatch, tmp_path / "run", method, "trainer.max_epochs=3")
    checkpoint = results["best_checkpoint"]
    result = run_entry_point(
        eval_main,
        f"ckpt_path={checkpoint}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        *QUIET_OVERRIDES[:2],
    )
    assert result.code == 0, result.text
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    assert evaluated["test/loss"] == pytest.approx(results["test"]["test/loss"], rel=1e-5)
    weights = read_checkpoint(checkpoint)["state_dict"]
    average = {k: v for k, v in weights.items() if k.startswith("weight_average.")}
    live_name = "network" if method == "smpl" else "student"
    live = {k: v for k, v in weights.items() if k.startswith(f"{live_name}.")}
    assert average and len(average) <= len(live)
    assert any(
        not torch.equal(value, live[f"{live_name}." + name.split(".", 1)[1].replace("/", ".")])
        for name, value in average.items()
        if f"{live_name}." + name.split(".", 1)[1].replace("/", ".") in live
    )


def _reward_of_first_step(monkeypatch, run_dir: Path, *overrides: str) -> float:
    _train(
        monkeypatch,
        run_dir,
        "smpl",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "trainer.log_every_n_steps=1",
        "method.baseline=none",
        *overrides,
    )
    rows = (run_dir / "csv/version_0/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("train/reward_step")
    return next(float(row.split(",")[column]) for row in rows[1:] if row.split(",")[column])


def test_reward_sign_switch_flips_the_reward(tmp_path: Path, monkeypatch) -> None:
    new_minus_old = _reward_of_first_step(monkeypatch, tmp_path / "a")
    old_minus_new = _reward_of_first_step(
        monkeypatch, tmp_path / "b", "method.reward_sign=old_minus_new"
    )
    assert new_minus_old != 0.0
    assert old_minus_new == pytest.approx(-new_minus_old, rel=1e-5)


def test_baseline_switch_keeps_a_moving_average_in_the_checkpoint(tmp_path: Path, monkeypatch):
    _train(monkeypatch, tmp_path / "ema", "smpl", "trainer.max_epochs=1")
    _train(monkeypatch, tmp_path / "none", "smpl", "trainer.max_epochs=1", "method.baseline=none")
    assert float(_last_weights(tmp_path / "ema")["reward_average"]) != 0.0
    assert float(_last_weights(tmp_path / "none")["reward_average"]) == 0.0


def test_meta_target_switch_changes_the_update(tmp_path: Path, monkeypatch) -> None:
    _train(monkeypatch, tmp_path / "hard", "smpl", "trainer.max_epochs=1")
    _train(monkeypatch, tmp_path / "soft", "smpl", "trainer.max_epochs=1", "method.mpl_target=soft")
    hard, soft = _last_weights(tmp_path / "hard"), _last_weights(tmp_path / "soft")
    names = [name for name in hard if name.startswith("network.")]
    assert names and any(not torch.equal(hard[name], soft[name]) for name in names)


@pytest.mark.parametrize("method", ["smpl", "mpl"])
def test_resume_is_exact_with_every_optimizer(tmp_path: Path, monkeypatch, method: str) -> None:
    _train(monkeypatch, tmp_path / "straight", method, "trainer.max_epochs=2")
    _train(monkeypatch, tmp_path / "split", method, "trainer.max_epochs=1")
    _train(monkeypatch, tmp_path / "split", method, "trainer.max_epochs=2", "resume=auto")
    straight, split = _last_weights(tmp_path / "straight"), _last_weights(tmp_path / "split")
    assert straight.keys() == split.keys()
    for name in straight:
        assert torch.equal(straight[name], split[name]), name
    if method == "mpl":
        states = read_checkpoint(tmp_path / "split/checkpoints/last.ckpt")["optimizer_states"]
        assert len(states) == 2 and all(state["state"] for state in states)


def test_no_graph_is_kept_across_steps(tmp_path: Path, monkeypatch) -> None:
    """200 iterations: the bytes a step holds at its peak do not grow (the seed's code kept
    graphs alive with `retain_graph` and `.item()`-less accumulations)."""
    cost = tmp_path / "cost.json"
    _train(
        monkeypatch,
        tmp_path / "run",
        "smpl",
        "trainer.max_epochs=100",
        "+trainer.limit_val_batches=0",
        "test=false",
        "monitor.metric=train/loss_epoch",
        "monitor.mode=min",
        "+callbacks.step_cost._target_=weaksup.step_cost.StepCostMeter",
        f"+callbacks.step_cost.path={cost}",
        "+callbacks.step_cost.warmup=3",
        "+callbacks.step_cost.keep_every_step=true",
    )
    measured = json.loads(cost.read_text())
    peaks = measured["peaks"]
    assert measured["steps"] == 197
    assert max(peaks) == min(peaks), (min(peaks), max(peaks))
    assert measured["held_between_steps"] == 0


def test_smpl_update_equals_the_two_updates_by_hand(tmp_path: Path, monkeypatch) -> None:
    """One iteration with identity views (jitter 0), plain SGD and no clipping: the weights after
    it are θ' − lr·(∇L_uda(θ) + change·∇L_own(θ)) with θ' = θ − lr·∇L_pl(θ)."""
    _train(
        monkeypatch,
        tmp_path,
        "smpl",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "optimizer.momentum=0.0",
        "optimizer.nesterov=false",
        "optimizer.weight_decay=0.0",
        "augment=jitter",
        "augment.vectors.weak_sigma=0.0",
        "augment.vectors.strong_sigma=0.0",
        "method.baseline=none",
        "method.ema_decay=null",
        "method.label_smoothing=0.0",
        "method.uda_warmup_steps=0",
        "+callbacks.first_batch._target_=smpl_probe.FirstBatchRecorder",
    )
    from smpl_probe import FirstBatchRecorder

    batch = FirstBatchRecorder.batch
    before = {
        name.removeprefix("network."): value
        for name, value in FirstBatchRecorder.weights.items()
        if name.startswith("network.")
    }
    after = {k.removeprefix("network."): v for k, v in _last_weights(tmp_path).items()}
    expected = hand_iteration(before, batch, lr=0.05, temperature=0.7, threshold=0.6, weight=8.0)
    for name, value in expected.items():
        assert torch.allclose(after[name], value, atol=1e-6), name


def hand_iteration(
    weights: dict[str, torch.Tensor],
    batch,
    lr: float,
    temperature: float,
    threshold: float,
    weight: float,
) -> dict[str, torch.Tensor]:
    """SMPL's iteration written out with `torch.func.functional_call` on a copy of the weights."""
    from torch.func import functional_call

    from weaksup.nn import MLP

    network = MLP(input_shape=[2], num_outputs=2, hidden_sizes=[8, 8])
    theta = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    inputs, targets, unlabeled = batch.labeled.inputs, batch.labeled.targets, batch.unlabeled
    weak_logits = functional_call(network, theta, (unlabeled,)).detach()
    soft = F.softmax(weak_logits / temperature, 1)
    confidence, hard = soft.max(1)
    mask = (confidence >= threshold).float()
    logits = functional_call(network, theta, (torch.cat([inputs, unlabeled]),))
    labeled, strong = logits[: len(targets)], logits[len(targets) :]
    log_strong = F.log_softmax(strong, 1)
    consistency = ((soft * (soft.log() - log_strong)).sum(1) * mask).mean()
    loss_uda = F.cross_entropy(labeled, targets) + weight * consistency
    loss_pl = F.cross_entropy(strong, hard)
    own = F.cross_entropy(strong, strong.detach().argmax(1))
    names = list(theta)
    g_pl = torch.autograd.grad(loss_pl, [theta[n] for n in names], retain_graph=True)
    g_uda = torch.autograd.grad(loss_uda, [theta[n] for n in names], retain_graph=True)
    g_own = torch.autograd.grad(own, [theta[n] for n in names])
    old = F.cross_entropy(labeled.detach(), targets)
    moved = {n: theta[n].detach() - lr * g for n, g in zip(names, g_pl, strict=True)}
    with torch.no_grad():
        new = F.cross_entropy(functional_call(network, moved, (inputs,)), targets)
    change = new - old
    return {
        n: moved[n] - lr * (gu + change * go) for n, gu, go in zip(names, g_uda, g_own, strict=True)
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("method.threshold=1.5",), "method.threshold must be a number in [0, 1], got 1.5"),
        (("method.temperature=0",), "method.temperature must be a finite number > 0, got 0"),
        (("data.unlabeled_ratio=0",), "data.unlabeled_ratio"),
        (("augment=images",), "augment"),
        (
            ("method.reward_sign=up",),
            "method.reward_sign must be one of new_minus_old, old_minus_new",
        ),
        (("method.baseline=mean",), "method.baseline must be one of none, ema"),
        (("method.augment_labeled=2",), "method.augment_labeled must be true or false, got 2"),
        (("data.num_labeled=null",), "set data.num_labeled=N"),
    ],
)
def test_bad_settings_stop_before_training(run_entry_point, tmp_path: Path, overrides, message):
    result = run_entry_point(main, *_args(tmp_path / "run", "smpl", *overrides))
    assert result.code == 1
    assert message in result.text
    assert "Traceback" not in result.text
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("augment_labeled", [True, False])
def test_the_labeled_batch_is_trained_on_its_weak_view_when_asked(
    compose_train, augment_labeled: bool
) -> None:
    """MPL-pytorch's `transform_labeled`: the labeled images get the weak view (its draws come
    first from the global stream); `augment_labeled=false` leaves them as they are."""
    from weaksup.build import build_datamodule, build_method

    cfg = compose_train(
        "method=smpl",
        *TWO_MOONS,
        "augment.vectors.weak_sigma=0.5",
        "augment.vectors.strong_sigma=0.5",
        f"method.augment_labeled={str(augment_labeled).lower()}",
    )
    model = build_method(cfg, build_datamodule(cfg).metadata)
    inputs = torch.randn(16, 2)
    torch.manual_seed(3)
    seen = model.labeled_view(inputs)
    torch.manual_seed(3)
    expected = model.views.weak(inputs) if augment_labeled else inputs
    assert torch.equal(seen, expected)
    assert torch.equal(seen, inputs) is not augment_labeled


def test_mil_bags_are_refused(run_entry_point, tmp_path: Path) -> None:
    result = run_entry_point(
        main, f"hydra.run.dir={tmp_path}", *QUIET_OVERRIDES, "method=smpl", "data=mil_gaussian"
    )
    assert result.code == 1
    assert "consumes SemiSupervisedBatch" in result.text


def test_step_cost_meter_counts_saved_tensors_once_per_storage(tmp_path: Path) -> None:
    """The CPU memory figure of bench-ssl: a saved storage counts once while a graph holds it."""
    from weaksup.step_cost import _SavedTensorLedger

    weight = torch.randn(64, 64, requires_grad=True)
    ledger = _SavedTensorLedger({weight.untyped_storage().data_ptr()})
    inputs = torch.randn(32, 64)
    with torch.autograd.graph.saved_tensors_hooks(ledger.pack, ledger.unpack):
        hidden = torch.tanh(inputs @ weight)  # saves inputs (weight excluded) and tanh's output
        loss = (hidden * hidden).sum()  # saves hidden twice: one storage
    assert ledger.current == 2 * 32 * 64 * 4
    loss.backward()
    del loss, hidden
    assert ledger.current == 0 and ledger.peak == 2 * 32 * 64 * 4


def test_mpl_student_waits_while_the_teacher_learns(tmp_path: Path, monkeypatch) -> None:
    """`method.student_wait_steps` (MPL-pytorch `--student-wait-steps`): the student keeps its
    initial weights for that many iterations while the teacher trains on UDA."""
    _train(
        monkeypatch,
        tmp_path,
        "mpl",
        "trainer.max_epochs=1",
        "method.student_wait_steps=2",
        "+callbacks.first_batch._target_=smpl_probe.FirstBatchRecorder",
    )
    from smpl_probe import FirstBatchRecorder

    before, after = FirstBatchRecorder.weights, _last_weights(tmp_path)
    students = [name for name in after if name.startswith("student.")]
    teachers = [name for name in after if name.startswith("teacher.")]
    assert students and teachers
    assert all(torch.equal(after[name], before[name]) for name in students)
    assert any(not torch.equal(after[name], before[name]) for name in teachers)
    header = (tmp_path / "csv/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/reward_step" not in header and "train/consistency_step" in header


def test_mpl_finetuning_trains_the_student_alone_from_its_ema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_entry_point
) -> None:
    """`method.finetune_epochs` (MPL-pytorch `finetune`): the last epoch copies the EMA into the
    student, trains the student alone on the labels and evaluates it, in `weaksup-eval` too."""
    from weaksup.eval import main as eval_main

    _train(monkeypatch, tmp_path / "plain", "mpl", "trainer.max_epochs=2")
    tuned = ("trainer.max_epochs=3", "method.finetune_epochs=1")
    _train(monkeypatch, tmp_path / "tuned", "mpl", *tuned, "method.finetune_lr=0.05")
    _train(
        monkeypatch,
        tmp_path / "still",
        "mpl",
        *tuned,
        "method.finetune_lr=1e-12",
        "method.finetune_momentum=0",
    )
    plain, tuned_weights, still = (
        _last_weights(tmp_path / name) for name in ("plain", "tuned", "still")
    )
    teachers = [name for name in plain if name.startswith("teacher.")]
    students = [name for name in plain if name.startswith("student.")]
    assert teachers and students
    assert all(torch.equal(tuned_weights[name], plain[name]) for name in teachers)
    for name in students:  # the fine-tuning starts from the EMA of the MPL epochs
        average = plain["weight_average." + name.split(".", 1)[1].replace(".", "/")]
        torch.testing.assert_close(still[name], average)
    assert any(not torch.equal(tuned_weights[name], still[name]) for name in students), (
        "the student did not train"
    )
    assert bool(tuned_weights["finetuned"]) and not bool(plain["finetuned"])
    rows = read_csv_rows(tmp_path / "tuned/csv/version_0/metrics.csv")
    finetune_epochs = {row["epoch"] for row in rows if row.get("train/finetune_epoch")}
    assert finetune_epochs == {"2"}
    assert all(not row.get("train/reward_epoch") for row in rows if row["epoch"] == "2")

    result = run_entry_point(
        eval_main,
        f"ckpt_path={tmp_path / 'tuned/checkpoints/last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        *QUIET_OVERRIDES[:2],
    )
    assert result.code == 0, result.text
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]["test/acc"] > 0


def test_a_finetuned_checkpoint_evaluates_the_student_and_an_older_one_its_ema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compose_train
) -> None:
    """What `weaksup-eval` does (load the state dict, then forward): the `finetuned` flag picks
    the live student; a checkpoint without the flag (before fine-tuning existed) loads and
    evaluates the EMA."""
    from weaksup.build import build_datamodule, build_method

    _train(
        monkeypatch,
        tmp_path,
        "mpl",
        "trainer.max_epochs=2",
        "method.finetune_epochs=1",
        "method.finetune_lr=0.05",
    )
    state = _last_weights(tmp_path)
    cfg = compose_train("method=mpl", *TWO_MOONS)
    model = build_method(cfg, build_datamodule(cfg).metadata).eval()
    inputs = torch.randn(32, 2)
    model.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(model.evaluation_forward(inputs), model.student(inputs))
        older = {name: value for name, value in state.items() if name != "finetuned"}
        model.load_state_dict(older)
        assert not model.finetuned
        averaged = model.evaluation_forward(inputs)
        assert not torch.allclose(averaged, model.student(inputs))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("trainer.max_epochs=2", "method.finetune_epochs=2"),
            "method.finetune_epochs=2 fine-tunes the student in the last epochs of "
            "trainer.max_epochs=2",
        ),
        (
            ("method.finetune_epochs=1", "method.finetune_momentum=1"),
            "method.finetune_momentum must be a number in [0, 1), got 1",
        ),
        (("method.finetune_lr=0",), "method.finetune_lr must be a finite number > 0, got 0"),
    ],
)
def test_bad_finetuning_settings_stop_before_training(
    run_entry_point, tmp_path: Path, overrides, message
) -> None:
    result = run_entry_point(main, *_args(tmp_path / "run", "mpl", *overrides))
    assert result.code == 1
    assert message in result.text
    assert "Traceback" not in result.text
