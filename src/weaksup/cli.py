"""The console entry points' shared wrapper around `hydra.main`: it owns how errors reach the user.

`weaksup-train`, `weaksup-eval` and `weaksup-predict` are each a plain task function
(`train(cfg)`, `evaluate(cfg)`, `predict(cfg)`) behind `hydra_entry_point`; `weaksup-report`
parses its own arguments, behind `script_entry_point`.

An error that says what to fix (a `ConfigError`, a `ValueError`/`FileNotFoundError` raised by
our own code, a `NonFiniteLossError`) prints as one line, `ConfigError: ...`, and exits 1;
Hydra's own composition errors print as Hydra words them, also without a traceback; anything
unexpected keeps its traceback. A key the config does not have is reported like a key a
constructor does not take, with close matches and the allowed keys, whether or not it was
given with `+`. `HYDRA_FULL_ERROR=1` keeps every stack trace.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra import compose, initialize_config_module
from hydra._internal.utils import get_args_parser  # the parser `hydra.main` reads argv with
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, ConfigCompositionException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from weaksup.config.validation import (
    ConfigError,
    check_added_top_level_keys,
    unknown_key_error,
)
from weaksup.hydra_callbacks import print_stopped_multirun_summary
from weaksup.run_folder import remove_if_only_hydra_files
from weaksup.threads import threads_of_run, torch_threads

CONFIG_MODULE = "weaksup.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
# Hydra's switch for complete stack traces; while it is "1", Hydra re-raises instead of exiting.
FULL_ERROR = "HYDRA_FULL_ERROR"
# Errors that say what to fix, whoever raised them: one line, no traceback (with
# `weaksup.methods.base.NonFiniteLossError`, looked up only once a method has been imported,
# so that commands that train nothing, `weaksup-report`, do not import torch to start).
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError,)
_METHODS_MODULE = "weaksup.methods.base"
# Errors that say what to fix when our own code raised them (constructors checking values,
# readers missing a file); raised inside a library they are unexpected and keep their traceback.
OWN_CODE_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError)
PACKAGE = __name__.partition(".")[0]
_NOT_OVERRIDABLE = re.compile(r"Could not override '([^']+)'")


def hydra_entry_point(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A console-script `main()` that composes `config_name` from argv and runs `task` on it."""

    def main() -> None:
        user_setting = os.environ.get(FULL_ERROR)

        # Hydra names the job (and its log file) after the wrapped task's module: train, eval, ...
        @functools.wraps(task)
        def run_task(cfg: DictConfig) -> Any:
            _check_search_runs_as_multirun()
            # The task sees the user's environment (DDP re-launches the command with it), and
            # runs on its share of torch threads (`num_threads`, see weaksup.threads).
            with _environment(FULL_ERROR, user_setting), torch_threads(threads_of_run(cfg)):
                return task(cfg)

        hydra_main = hydra.main(
            version_base="1.3", config_path=CONFIG_PATH, config_name=config_name
        )(run_task)
        try:
            _check_added_top_level_keys(config_name)  # before any job of a sweep starts
            # Hydra's `run_and_report` would print its own report and `sys.exit(1)` before we
            # see a composition error; with its full-error switch on it re-raises instead.
            with _environment(FULL_ERROR, "1"):
                hydra_main()
        except Exception as error:
            print_stopped_multirun_summary()  # a failed job stops the basic sweeper: summarise
            explained = _explain_unknown_key(error, config_name) or _explain_failed_study(error)
            if user_setting == "1":
                if explained is None:
                    raise
                raise explained from error
            _exit_if_expected(explained or error)
            raise

    main.__doc__ = f"Compose `{config_name}.yaml` from the command line and run {task.__name__}."
    return main


def script_entry_point(task: Callable[[], Any]) -> Callable[[], None]:
    """A console-script `main()` for a command that is not a Hydra app (`weaksup-report`, which
    parses its own arguments): its errors reach the user as those of `hydra_entry_point` do."""

    def main() -> None:
        try:
            task()
        except Exception as error:
            if os.environ.get(FULL_ERROR) == "1":
                raise
            _exit_if_expected(error)
            raise

    main.__doc__ = (
        f"Run {getattr(task, '__name__', 'the command')} on the command line's arguments."
    )
    return main


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """Set (or, with None, unset) an environment variable for the duration of the block."""
    previous = os.environ.get(name)
    _set_environment(name, value)
    try:
        yield
    finally:
        _set_environment(name, previous)


def _set_environment(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _exit_if_expected(error: Exception) -> None:
    """Print an error the user can act on without a traceback and exit 1; return for any other."""
    if _is_user_error(error):
        lines = [f"{type(error).__name__}: {error}"]
    elif isinstance(error, CompactHydraException) and not isinstance(
        error,
        InstantiationException,  # a constructor failed unexpectedly: keep its traceback
    ):
        lines = [str(error)]  # as Hydra prints them: "Could not find 'loss/hinj' ..."
        if isinstance(error.__cause__, OmegaConfBaseException):
            lines.append(str(error.__cause__))
    else:
        return
    sys.stdout.flush()  # the message comes after whatever the run printed
    print(*lines, sep="\n", file=sys.stderr)
    sys.exit(1)


def _is_user_error(error: Exception) -> bool:
    methods = sys.modules.get(_METHODS_MODULE)  # not imported: no NonFiniteLossError raised
    user_errors = (*USER_ERRORS, methods.NonFiniteLossError) if methods else USER_ERRORS
    if isinstance(error, user_errors):
        return True
    return isinstance(error, OWN_CODE_ERRORS) and _raised_in_package(error)


def _raised_in_package(error: BaseException) -> bool:
    """Whether the innermost frame of the error's traceback is in this package's code."""
    frame_module = ""
    traceback = error.__traceback__
    while traceback is not None:
        frame_module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        traceback = traceback.tb_next
    return frame_module.partition(".")[0] == PACKAGE


def _explain_failed_study(error: Exception) -> ConfigError | None:
    """The Optuna sweeper asks its study for the best trial after the last one; when every
    trial failed the storage raises a bare `ValueError` ("Record does not exist." in SQLite,
    "No trials are completed yet." in memory). Said in words, after the summary of the failed
    jobs that the entry point prints first; None for any other error."""
    if not isinstance(error, ValueError):
        return None
    traceback = error.__traceback__
    while traceback is not None:
        code = traceback.tb_frame.f_code
        if code.co_name == "best_trial" and Path(code.co_filename).parts[-3:-1] == (
            "optuna",
            "study",
        ):
            return ConfigError(
                "no trial of the Optuna study finished, so it has no best trial: every job "
                "failed (their errors are listed above and in each job's error.txt)"
            )
        traceback = traceback.tb_next
    return None


def _check_search_runs_as_multirun() -> None:
    """`hparams_search=...` configures the Optuna sweeper, which only runs with `-m`; without
    it Hydra would train one plain job of the experiment the search starts from."""
    hydra_cfg = HydraConfig.get()
    search = hydra_cfg.runtime.choices.get("hparams_search")
    if search is not None and hydra_cfg.mode == RunMode.RUN:
        remove_if_only_hydra_files(Path(hydra_cfg.runtime.output_dir))  # nothing ran
        raise ConfigError(
            f"hparams_search={search} configures an Optuna study, which runs as a multirun: "
            f"weaksup-train -m hparams_search={search} ..."
        )


def _check_added_top_level_keys(config_name: str) -> None:
    """`+key=...` on the command line for a top-level key that is neither a key of the entry
    config nor a config group: a `ConfigError` listing them (see `check_added_top_level_keys`).
    Overrides Hydra cannot parse are left for Hydra to report."""
    args = get_args_parser().parse_args()
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except Exception:
        return
    added = [
        (str(override.key_or_group), str(override.input_line))
        for override in overrides
        if (override.is_add() or override.is_force_add())
        and override.package is None
        and not re.search(r"[./]", str(override.key_or_group))
    ]
    if added:
        check_added_top_level_keys(added, top_level_keys(args.config_name or config_name))


def top_level_keys(config_name: str) -> list[str]:
    """The keys of the shipped entry config `config_name` (`train`, `eval`, `predict`), its
    config groups (the folders of the config tree) and `hydra`, sorted."""
    root = resources.files(CONFIG_MODULE)
    entry = yaml.safe_load((root / f"{config_name}.yaml").read_text()) or {}
    groups = [item.name for item in root.iterdir() if item.is_dir() and item.name[0] not in "_."]
    return sorted({*(str(key) for key in entry if key != "defaults"), *groups, "hydra"})


def _explain_unknown_key(error: Exception, config_name: str) -> ConfigError | None:
    """Hydra's "Could not override 'trainer.max_epoch'" as the `ConfigError` of an unknown key.

    The config is composed again without the overrides Hydra refuses, to find the node the key
    was meant for: its constructor's arguments (or its keys) are what the key may be. None when
    the error is another one, or the node cannot be found.
    """
    cause = error.__cause__
    if not (
        isinstance(error, ConfigCompositionException)
        and _NOT_OVERRIDABLE.match(str(error))
        and isinstance(cause, ConfigAttributeError | ConfigKeyError)
        and cause.full_key
    ):
        return None
    try:
        cfg = _compose_without_refused_overrides(config_name)
    except Exception:  # the explanation is optional: Hydra's own error is still reported
        return None
    path, _, key = str(cause.full_key).rpartition(".")
    node = OmegaConf.select(cfg, path) if cfg is not None and path else cfg
    return unknown_key_error(node, path, key) if isinstance(node, DictConfig) else None


def _compose_without_refused_overrides(config_name: str) -> DictConfig | None:
    """The config of this command line (sweeps left out) without the overrides Hydra refuses."""
    args = get_args_parser().parse_args()
    overrides = [
        override
        for override in OverridesParser.create().parse_overrides(args.overrides)
        if not override.is_sweep_override()
    ]
    while True:
        try:
            with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
                return compose(
                    args.config_name or config_name,
                    [str(override.input_line) for override in overrides],
                    return_hydra_config=True,
                )
        except ConfigCompositionException as error:
            refused = _NOT_OVERRIDABLE.match(str(error))
            kept = [o for o in overrides if refused and o.key_or_group != refused.group(1)]
            if len(kept) == len(overrides):
                return None
            overrides = kept
