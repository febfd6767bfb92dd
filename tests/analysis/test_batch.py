"""The critical batch size (analysis/laws/batch.py): known answers, from curves and from a CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalinglab.analysis.cli import main
from scalinglab.analysis.laws.batch import (
    fit_critical_batch,
    steps_needed,
    steps_to_reach,
    tradeoff_points,
)

BATCHES = 2.0 ** np.arange(4, 12)  # 16 to 2048, 2x apart
TRUTH = {"small": (1000.0, 120.0), "big": (3000.0, 500.0)}  # (S_min, B_noise)


def tradeoff_table(noise: float = 0.03, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for group, (s_min, b_noise) in TRUTH.items():
        steps = steps_needed(BATCHES, s_min, b_noise) * np.exp(rng.normal(0, noise, BATCHES.size))
        rows += [
            {"g": group, "batch_size": b, "steps": s} for b, s in zip(BATCHES, steps, strict=True)
        ]
    return pd.DataFrame(rows)


def test_known_critical_batch_sizes_are_recovered_with_intervals_that_hold() -> None:
    table = tradeoff_table()
    fit = fit_critical_batch(table["batch_size"], table["steps"], table["g"], n_bootstrap=200)
    assert fit.trusted, fit.failed_checks
    for group, (s_min, b_noise) in TRUTH.items():
        assert fit.params[f"B_crit[{group}]"] == pytest.approx(b_noise, rel=0.05)
        assert fit.params[f"S_min[{group}]"] == pytest.approx(s_min, rel=0.05)
        lo, hi = fit.ci95[f"B_crit[{group}]"]
        assert lo < b_noise < hi
        assert fit.params[f"E_min[{group}]"] == pytest.approx(
            fit.params[f"S_min[{group}]"] * fit.params[f"B_noise[{group}]"]
        )


def test_checks_refuse_a_critical_batch_outside_the_batch_sizes_and_too_few_sizes() -> None:
    steps = steps_needed(BATCHES, 1000.0, 1e5)  # B_noise far above the largest batch
    outside = fit_critical_batch(BATCHES, steps, n_bootstrap=50)
    failed = {c["name"] for c in outside.failed_checks}
    assert "bracket" in failed and "B_crit" in outside.not_identified
    table = tradeoff_table()
    grouped = fit_critical_batch(
        table["batch_size"], np.where(table["g"] == "big", 1e4 / table["batch_size"], table["steps"]),
        table["g"], n_bootstrap=50,
    )  # fmt: skip
    assert "B_crit[big]" in grouped.not_identified and "B_crit[small]" not in grouped.not_identified
    few = fit_critical_batch(BATCHES[:3], steps_needed(BATCHES[:3], 1000.0, 60.0), n_bootstrap=50)
    assert "design" in {c["name"] for c in few.failed_checks}


def test_steps_to_reach_interpolates_in_log_steps() -> None:
    steps, loss = np.array([10, 100, 1000]), np.array([4.0, 3.0, 2.0])
    assert steps_to_reach(steps, loss, 3.0) == pytest.approx(100)
    assert steps_to_reach(steps, loss, 2.5) == pytest.approx(np.sqrt(100 * 1000))
    assert steps_to_reach(steps, loss, 1.9) is None


def curves_frame(b_noise: float = 256.0) -> pd.DataFrame:
    """Runs whose loss is one curve of the steps S/(1 + B_noise/B): S = S_min (1 + B_noise/B)."""
    rows = []
    for k, batch in enumerate(BATCHES):
        for step in np.unique(np.geomspace(1, 20000, 80).round()):
            progress = step / (1 + b_noise / batch)
            rows.append({"run_id": f"r{k}", "step": step, "n_params": 1e6,
                         "tokens_per_step": batch, "val/loss": 2.0 + 5.0 / progress**0.5})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_tradeoff_from_curves_recovers_b_noise_and_drops_unreached_targets() -> None:
    points, dropped = tradeoff_points(curves_frame(), [2.4, 2.3, 2.01], "val/loss")
    assert dropped == ["N=1e+06, loss 2.01: 8 of 8 runs never reach it"]
    fit = fit_critical_batch(points["batch"], points["steps"], points["group"], n_bootstrap=50)
    for target in ("2.4", "2.3"):
        assert fit.params[f"B_crit[N=1e+06, L={target}]"] == pytest.approx(256.0, rel=0.05)
    # Default targets: the worst final loss and 5% and 10% above it, which every run reaches.
    points, dropped = tradeoff_points(curves_frame(), None, "val/loss")
    assert not dropped and points["group"].nunique() == 3


def test_cli_batch_from_a_csv_writes_the_fit_and_refuses_missing_columns(
    tmp_path: Path, capsys
) -> None:
    tradeoff_table().rename(columns={"batch_size": "B", "steps": "S"}).to_csv(
        tmp_path / "t.csv", index=False
    )
    argv = ["batch", str(tmp_path / "t.csv"), "--batch-col", "B", "--steps-col", "S"]
    assert main([*argv, "--group-col", "g", "--json", str(tmp_path / "b.json")]) == 0
    fit = json.loads((tmp_path / "b.json").read_text())
    assert fit["law"] == "batch" and fit["params"]["B_crit[big]"] == pytest.approx(500, rel=0.05)
    capsys.readouterr()
    assert main(["batch", str(tmp_path / "t.csv")]) == 2
    assert capsys.readouterr().err.strip() == (
        "scaling-fit: error: batch needs the columns batch_size, steps, which "
        f"{tmp_path / 't.csv'} does not have (name them: --batch-col, --steps-col, --group-col)"
    )


def test_batch_from_runs_refuses_losses_of_other_data(tmp_path: Path, capsys) -> None:
    """Steps to one loss compare runs whose losses are one quantity: not bytes against BPE."""
    from tests.analysis.fake_runs import write_run

    for k, batch in enumerate([4, 8, 16, 32]):
        job = write_run(tmp_path / str(k), run_id=f"r{k}", sweep_id="s", n_params=1e5,
                        tokens=1e7, batch_size=batch)  # fmt: skip
        record = json.loads((job / "run.json").read_text())
        record["tokenizer"] = "bpe:1a2b3c4d" if k % 2 else "bytes"
        (job / "run.json").write_text(json.dumps(record))
    assert main(["batch", str(tmp_path), "--bootstrap", "0"]) == 2
    error = capsys.readouterr().err
    assert "scaling-fit: error: the runs' losses are not one quantity" in error
    assert "tokenizer (2 bpe:1a2b3c4d, 2 bytes)" in error and "--mix-data" in error
