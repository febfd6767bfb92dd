"""The project's end-to-end test of the science: a reduced known-floor study.

Models are trained on the synthetic language whose loss floor is known exactly
(data=synthetic_powerlaw, sweeps/known_floor.yaml), then fitted the way `scaling-fit report`
fits them. The L(N, D) fit's E must land within E_TOLERANCE of the floor that every run records.
The full study (README, "A language with a known floor") takes 18 CPU-minutes; this one about 4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scalinglab.analysis.cli import main as scaling_fit

pytestmark = pytest.mark.slow

# The full study's E lands within 0.1% of the floor (its fit not yet trusted: B's interval is too
# wide); from 3 sizes and 3 budgets the fit has less to go on (-1.5% when measured), so the
# reduced one is held to 5% on E, an interval holding it, and exponents that exclude 0.
E_TOLERANCE = 0.05
REDUCED = ["model.d_model=32,16,8", "wsd_branches=[5.0e5,1.0e6,2.0e6]"]


def test_a_reduced_known_floor_study_recovers_the_floor(tmp_path: Path) -> None:
    sweep = tmp_path / "known_floor"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "scalinglab.train", "-m", "sweep=known_floor", *REDUCED]
    subprocess.run(
        [*command, f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}"],
        env=env,
        check=True,
        capture_output=True,
    )
    out = tmp_path / "report" / "report.md"
    assert scaling_fit(["report", str(sweep), "--out", str(out)]) == 0

    report = json.loads(out.with_name("report.json").read_text())
    (fit,) = [f for f in report["fits"] if f.get("law") == "chinchilla"]
    floors = {json.loads(p.read_text())["irreducible_loss"] for p in sweep.rglob("run.json")}
    (floor,) = floors  # every run of the sweep records the same floor
    E, (lo, hi) = fit["params"]["E"], fit["ci95"]["E"]
    assert abs(E / floor - 1) <= E_TOLERANCE, (E, floor)
    assert lo <= E <= hi
    for exponent in ("alpha", "beta"):
        assert fit["ci95"][exponent][0] > 0, (exponent, fit["ci95"][exponent])
    text = out.read_text()
    assert f"irreducible loss: {floor:.4g} nats/token" in text
