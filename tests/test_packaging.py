"""An installed wheel composes and runs outside the repository (configs ship as `weaksup.conf`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_every_config_and_runs_outside_the_repo(tmp_path: Path) -> None:
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(wheel_dir)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
    )
    (wheel,) = wheel_dir.glob("weaksup-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )

    shipped = {
        p.relative_to(target / "weaksup" / "conf")
        for p in (target / "weaksup" / "conf").rglob("*.yaml")
    }
    in_repo = {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped == in_repo

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    environment = {
        **os.environ,
        "PYTHONPATH": str(target),
    }  # the wheel's copy shadows the editable one
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import weaksup.conf, weaksup.train, sys; print(weaksup.conf.__file__); "
            "sys.argv = ['weaksup-train', '--cfg', 'job', 'loss=hinge', 'data=digits']; weaksup.train.main()",
        ],
        capture_output=True,
        text=True,
        cwd=outside,
        env=environment,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines()[0].startswith(str(target))
    assert (
        "weaksup.losses.HingeLoss" in completed.stdout
        and "weaksup.data.sources.Digits" in completed.stdout
    )
