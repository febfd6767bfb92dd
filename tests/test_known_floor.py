"""The project's end-to-end test of the science: a reduced known-floor study.

Models are trained on the synthetic language whose loss floor is known exactly
(data=synthetic_powerlaw, sweeps/known_floor.yaml), then fitted the way `scaling-fit report`
fits them. The L(N, D) fit's E must land within E_TOLERANCE of the floor that every run records.
The full study (README, "A language with a known floor") takes about 20 CPU-minutes; this one,
3 of its widths at 3 of its token counts, about 5.
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

# The full study's trusted fit lands 0.3% above the floor; 9 points for 5 parameters are too few
# for the fit to be trusted (its design check asks for 10), and measured they gave E = 2.458
# [2.434, 2.465] (+0.4%). The reduced one is held to the 5% on E, an interval that holds
# the floor, and exponents that exclude 0.
E_TOLERANCE = 0.05
REDUCED = ["model.d_model=64,32,16", "wsd_branches=[5.0e5,1.0e6,2.0e6]"]


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
    assert lo <= floor <= hi, (lo, floor, hi)
    for exponent in ("alpha", "beta"):
        assert fit["ci95"][exponent][0] > 0, (exponent, fit["ci95"][exponent])
    text = out.read_text()
    assert f"irreducible loss: {floor:.4g} nats/token" in text
