"""Sweepers get a number from every job, or the sweep stops at start saying why; the Optuna
studies of `hparams_search/` compose, follow monitor.mode, resume and survive failed trials."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep
from omegaconf import DictConfig, OmegaConf
from optuna.study import StudyDirection
from optuna.trial import TrialState

from weaksup.config.validation import validate_config
from weaksup.report import curve_data, write_report
from weaksup.train import main

from conftest import QUIET_OVERRIDES, optuna_study, read_csv_rows, run_multirun

OPTUNA = (
    "hydra/sweeper=optuna",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.direction=maximize",
    "hydra.sweeper.sampler.seed=0",
    "optimizer.lr=interval(0.001,0.01)",
)


def test_optuna_gets_a_score_under_fast_dev_run(tmp_path: Path, run_entry_point) -> None:
    """`debug=fdr` saves no checkpoint: the last val/acc is the objective, not None."""
    sweep_dir = tmp_path / "sweep"
    result = run_entry_point(
        main, "-m", *OPTUNA, "debug=fdr", f"hydra.sweep.dir={sweep_dir}", *QUIET_OVERRIDES
    )
    assert result.code == 0, result.err
    optimization = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_value:" in optimization
    for job in ("0", "1"):
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["best_score"] is None and 0.0 <= metrics["last_score"] <= 1.0


def test_a_hand_written_optuna_sweeper_minimising_val_acc_is_refused(
    tmp_path: Path, run_entry_point
) -> None:
    """Optuna minimises by default: on val/acc (monitor.mode=max) it would keep the worst trial."""
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in OPTUNA if not o.startswith("hydra.sweeper.direction")]
    result = run_entry_point(
        main,
        "-m",
        *overrides,
        "hydra.sweeper.direction=minimize",
        f"hydra.sweep.dir={sweep_dir}",
        *QUIET_OVERRIDES,
    )
    assert result.code != 0
    assert (
        "hydra.sweeper.direction=minimize but monitor.mode=max (val/acc): the study would keep "
        "the worst trial; set hydra.sweeper.direction=maximize"
    ) in result.err
    assert not list(sweep_dir.glob("*/metrics.json"))


def test_optuna_without_validation_stops_at_start(tmp_path: Path, run_entry_point) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_entry_point(
        main,
        "-m",
        *OPTUNA,
        "trainer.max_epochs=1",
        "+trainer.limit_val_batches=0",
        f"hydra.sweep.dir={sweep_dir}",
        *QUIET_OVERRIDES,
    )
    assert result.code != 0
    assert (
        "the sweeper OptunaSweeper optimises val/acc, but trainer.limit_val_batches=0 runs no "
        "validation, so no score would come back"
    ) in result.err
    assert not list(sweep_dir.glob("*/metrics.json"))


# --- hparams_search: Optuna studies that resume --------------------------------------------

SEARCH_OPTIONS = resources.files("weaksup.conf") / "hparams_search"
TINY_SEARCH = ("trainer.max_epochs=1", "hydra.sweeper.n_trials=2")


def _search_options() -> list[Any]:
    """Every option of `hparams_search/`; one whose experiment has not landed is skipped."""
    names = sorted(e.name.removesuffix(".yaml") for e in SEARCH_OPTIONS.iterdir() if e.is_file())
    return [
        pytest.param(name, marks=pytest.mark.skipif(not _experiment_exists(name), reason=name))
        for name in names
    ]


def _experiment_exists(option: str) -> bool:
    """Whether the experiment a search option starts from is shipped (`override /experiment`)."""
    experiment = OmegaConf.load(str(SEARCH_OPTIONS / f"{option}.yaml")).defaults[-1]
    name = experiment["override /experiment"]
    return (resources.files("weaksup.conf") / "experiment" / f"{name}.yaml").is_file()


def _compose_search(*overrides: str) -> DictConfig:
    with initialize_config_module(version_base="1.3", config_module="weaksup.conf"):
        return compose("train", list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("option", _search_options())
def test_every_search_composes_and_its_space_names_keys_of_the_run(option: str) -> None:
    """TPE with a seed, the direction of monitor.mode, the experiment's grid dropped, and every
    searched key a key of the run (composed with a value of each distribution, validated)."""
    cfg = _compose_search(f"hparams_search={option}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.direction == {"max": "maximize", "min": "minimize"}[cfg.monitor.mode]
    assert sweeper.study_name == option and sweeper.n_trials >= 10
    assert sweeper.max_failure_rate == 1.0
    own = OmegaConf.load(str(SEARCH_OPTIONS / f"{option}.yaml")).hydra.sweeper.params
    assert set(sweeper.params) == set(own)  # nothing of the experiment's basic-sweeper grid

    values = []
    for key, space in sweeper.params.items():
        (override,) = OverridesParser.create().parse_overrides([f"{key}={space}"])
        sweep = override.value()
        if isinstance(sweep, IntervalSweep):
            values.append(f"{key}={(sweep.start + sweep.end) / 2}")
        else:
            assert isinstance(sweep, ChoiceSweep), (key, space)
            values += [f"{key}={choice}" for choice in sweep.list[-1:]]
    trial = _compose_search(f"hparams_search={option}", *values)
    del trial.hydra
    validate_config(trial)


def test_direction_follows_monitor_mode() -> None:
    minimise = _compose_search("hparams_search=mil_mnist_bags", "monitor.mode=min")
    assert minimise.hydra.sweeper.direction == "minimize"
    bad = _compose_search("hparams_search=mil_mnist_bags", "monitor.mode=maximum")
    with pytest.raises(Exception, match=r"'monitor.mode' must be max or min, got 'maximum'"):
        _ = bad.hydra.sweeper.direction


def test_running_the_same_search_again_continues_the_study(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """2 trials, the same command again: 4 trials in one SQLite study, new parameters."""
    for _ in range(2):
        code = run_multirun(
            monkeypatch,
            f"paths.root_dir={tmp_path}",
            "hparams_search=supervised_digits",
            *TINY_SEARCH,
        )
        assert code == 0

    study = optuna_study(tmp_path, "supervised_digits")
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert study.direction == StudyDirection.MAXIMIZE  # monitor val/acc, mode max
    learning_rates = [t.params["optimizer.lr"] for t in trials]
    assert len(set(learning_rates)) == 4  # the resumed command proposes new parameters
    sweeps = sorted((tmp_path / "outputs" / "multiruns" / "supervised_digits").glob("*/*"))
    assert len(sweeps) == 2  # one sweep folder per command, <date>/<time>
    for sweep, trial_pair in zip(sweeps, (trials[:2], trials[2:]), strict=True):
        assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
        for job, trial in zip(("0", "1"), trial_pair, strict=True):
            metrics = json.loads((sweep / job / "metrics.json").read_text())
            assert metrics["best_score"] == pytest.approx(trial.value)  # the best val/acc
            overrides = (sweep / job / ".hydra" / "overrides.yaml").read_text()
            assert f"optimizer.lr={trial.params['optimizer.lr']}" in overrides

    # weaksup-report on the study folder: the trials of both commands, one curve per setting.
    summary = write_report([sweeps[0].parents[1]], tmp_path / "report")
    assert len(summary.jobs) == 4 and len(summary.rows) == 4  # every trial its own settings
    plot = tmp_path / "report" / "plots" / "test-acc_vs_optimizer.lr.png"
    assert plot.is_file()
    curves = curve_data(summary.jobs, "optimizer.lr", "test/acc", summary.ignore_keys)
    assert list(curves) == ["test/acc"] and sorted(curves["test/acc"]) == sorted(learning_rates)


def test_a_failed_trial_is_stored_and_the_study_goes_on_unless_fail_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    space = "hydra.sweeper.params={optimizer.lr:'choice(-1.0,0.01)'}"
    search = ("hparams_search=supervised_digits", space, "trainer.max_epochs=1")
    code = run_multirun(
        monkeypatch, f"paths.root_dir={tmp_path}", *search, "hydra.sweeper.n_trials=4"
    )
    assert code == 0
    trials = optuna_study(tmp_path, "supervised_digits").trials
    states = [(t.params["optimizer.lr"], t.state) for t in trials]
    assert len(states) == 4 and {state for _, state in states} == {
        TrialState.FAIL,
        TrialState.COMPLETE,
    }
    assert all((lr < 0) == (state == TrialState.FAIL) for lr, state in states)
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "supervised_digits").glob("*/*")
    failed = [row for row in read_csv_rows(sweep / "jobs.csv") if row["status"] == "failed"]
    assert len(failed) == sum(state == TrialState.FAIL for _, state in states)
    assert {row["error"] for row in failed} == {"ConfigError: 'optimizer.lr' must be > 0, got -1.0"}

    # Fail fast: the first failed trial stops the sweep with its error (exit 1).
    fail_fast = ("hydra.sweeper.max_failure_rate=0.0", "hydra.sweeper.study_name=fail_fast")
    code = run_multirun(
        monkeypatch, f"paths.root_dir={tmp_path}", *search, *fail_fast, "hydra.sweeper.n_trials=4"
    )
    assert code == 1
    lrs = [t.params["optimizer.lr"] for t in optuna_study(tmp_path, "fail_fast").trials]
    assert lrs[-1] == -1.0 and all(lr == 0.01 for lr in lrs[:-1])  # stopped at the first failure


def test_a_study_whose_every_trial_failed_says_so_after_the_failed_jobs(
    run_entry_point, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Optuna's storage has no best trial to give the sweeper when none finished: one line
    after the summary of the failed jobs, not the storage's "Record does not exist." trace."""
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    result = run_entry_point(
        main,
        "-m",
        f"paths.root_dir={tmp_path}",
        *QUIET_OVERRIDES,
        "hparams_search=supervised_digits",
        "hydra.sweeper.params={optimizer.lr:'choice(-1.0,-2.0)'}",
        "hydra.sweeper.n_trials=2",
    )
    assert result.code == 1
    assert "failed jobs:" in result.out
    assert result.err.strip().splitlines()[-1] == (
        "ConfigError: no trial of the Optuna study finished, so it has no best trial: every job "
        "failed (their errors are listed above and in each job's error.txt)"
    )
    assert "Traceback" not in result.err
    states = {t.state for t in optuna_study(tmp_path, "supervised_digits").trials}
    assert states == {TrialState.FAIL}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+hparam_search=supervised_digits",
            "ConfigError: unknown top-level key 'hparam_search' (+hparam_search=supervised_digits):"
            " nothing reads it; did you mean hparams_search? Top-level keys and config groups: ",
        ),
        (
            "++num_thread=1",
            "ConfigError: unknown top-level key 'num_thread' (++num_thread=1): nothing reads it;"
            " did you mean num_threads? Top-level keys and config groups: ",
        ),
    ],
)
def test_an_added_unknown_top_level_key_is_refused_before_any_job(
    override: str, message: str, tmp_path: Path, run_entry_point
) -> None:
    result = run_entry_point(main, "-m", override, "seed=1,2", f"hydra.sweep.dir={tmp_path / 's'}")
    assert result.code == 1
    line = result.err.strip().splitlines()[-1]
    assert line.startswith(message)
    listed = line.removeprefix(message).split(", ")
    assert {"seed", "trainer", "hparams_search", "num_threads", "hydra"} <= set(listed)
    assert not (tmp_path / "s").exists()  # refused before the sweep started


def test_a_search_names_its_options_and_needs_multirun(tmp_path: Path, run_entry_point) -> None:
    """`+hparams_search=optuna` (ignored before the group existed) names the options now."""
    unknown = run_entry_point(main, "-m", "+hparams_search=optuna", f"paths.root_dir={tmp_path}")
    assert unknown.code == 1
    assert "Could not find 'hparams_search/optuna'" in unknown.err
    assert "\tmil_mnist_bags\n" in unknown.err and "\tsupervised_digits\n" in unknown.err
    assert "base" not in unknown.err.partition("Config search path")[0]

    single = run_entry_point(main, "hparams_search=supervised_digits", f"paths.root_dir={tmp_path}")
    assert single.code == 1
    assert single.err.strip().splitlines()[-1] == (
        "ConfigError: hparams_search=supervised_digits configures an Optuna study, which runs as"
        " a multirun: weaksup-train -m hparams_search=supervised_digits ..."
    )
    assert not list(tmp_path.glob("outputs/runs/*/*"))  # no folder left behind
