"""The README's "Errors you can expect", produced by running each bad command for real.

    python tests/errors_catalogue.py           # print the section
    python tests/errors_catalogue.py --write   # rewrite it in README.md (make docs-errors)

Each case runs the real entry point (`weaksup.train.main`, `weaksup.eval.main`) in this
process, in a scratch folder, and keeps the last line it printed to stderr: the one-line
message a user sees. `tests/test_errors_catalogue.py` checks that README.md holds exactly what
this produces, so the documented messages cannot drift from the code.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BEGIN, END = "<!-- errors:begin -->", "<!-- errors:end -->"
QUIET = (
    "++callbacks.progress_bar=null",
    "++callbacks.model_summary=null",
    "trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
    "hydra/job_logging=none",
    "hydra/hydra_logging=none",
)
TINY = ("trainer.max_epochs=1",)


@dataclass(frozen=True)
class Case:
    """A command a user might type, shown as `command`; `setup` prepares its run folder."""

    command: str
    entry: str = "train"
    setup: tuple[str, ...] = ()  # a first, successful command in the same run folder
    hidden: tuple[str, ...] = field(default=())  # overrides the README does not show

    def arguments(self, words: str, run_dir: Path) -> list[str]:
        return [*words.split(), f"hydra.run.dir={run_dir}", *QUIET, *self.hidden]


CASES = (
    Case("trainer.max_epoch=3"),
    Case("data.batch_size=abc"),
    Case("trainer.precision=8"),
    Case("trainer.max_epochs=abc"),
    Case("seed=-1"),
    Case("optimizer.lr=-0.1"),
    Case("trainer.max_epochs=0"),
    Case("data.num_labeled=100000"),
    Case("method=mil"),
    Case("method=mil data=mil_gaussian loss=ce"),
    Case("monitor.metric=val/acx", hidden=TINY),
    Case("data=mnist10k data.source.archive=missing.tgz"),
    Case("optimizer.lr=1e30", hidden=TINY),
    Case("trainer.max_epochs=1", setup=("trainer.max_epochs=1",)),
    Case("optimizer.lr=0.5 resume=auto", setup=("trainer.max_epochs=1",), hidden=TINY),
    Case("", entry="eval"),
)


def _main(entry: str) -> Callable[[], object]:
    if entry == "train":
        from weaksup.train import main
    else:
        from weaksup.eval import main
    return main


def _run(entry: str, arguments: list[str]) -> tuple[int, str]:
    """Exit code and stderr of one in-process run of `weaksup-<entry>`."""
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    sys.argv = [f"weaksup-{entry}", *arguments]
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            _main(entry)()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved_argv
    return code, stderr.getvalue()


def run_case(case: Case, scratch: Path) -> str:
    """The message `case` ends with: its last stderr line, scratch paths written as `<run>`."""
    run_dir = scratch / f"run{CASES.index(case)}"
    for setup in case.setup:
        code, err = _run("train", case.arguments(setup, run_dir))
        if code != 0:
            raise RuntimeError(f"setup {setup!r} failed: {err[-500:]}")
    code, err = _run(case.entry, case.arguments(case.command, run_dir))
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 0 or not lines:
        raise RuntimeError(f"{case.command!r} did not fail (exit {code}): {err[-500:]}")
    # a multi-line message (resume) starts at its error class; show it whole
    start = max(i for i, line in enumerate(lines) if line.split(":", 1)[0].isidentifier())
    message = "\n".join(lines[start:])
    for path, name in ((run_dir, "<run>"), (REPO / "data", "<data>"), (Path.cwd(), "<cwd>")):
        message = message.replace(str(path), name)
    return message


def section(scratch: Path) -> str:
    blocks = []
    for case in CASES:
        setup = "".join(f"$ weaksup-train {words}   # first run\n" for words in case.setup)
        command = f"$ weaksup-{case.entry} {case.command}".rstrip()
        blocks.append(f"{setup}{command}\n{run_case(case, scratch)}")
    return "```\n" + "\n\n".join(blocks) + "\n```"


def readme_section(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the section in README.md")
    write = parser.parse_args().write
    os.environ.setdefault("WEAKSUP_DATA_DIR", str(REPO / "data"))
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory() as scratch:
        produced = section(Path(scratch))
    if not write:
        print(produced)
        return
    text = README.read_text()
    before, rest = text.split(BEGIN, 1)
    README.write_text(f"{before}{BEGIN}\n{produced}\n{END}{rest.split(END, 1)[1]}")
    print(f"README.md: {len(CASES)} errors written")


if __name__ == "__main__":
    main()
