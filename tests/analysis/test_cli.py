"""`scaling-fit` end to end on fake run directories and a CSV table whose truth is known."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from scalinglab.analysis.cli import main
from scalinglab.analysis.compute_optimal import frontier_band
from scalinglab.analysis.load import completed, load_runs
from scalinglab.analysis.result import FitResult

from .fake_runs import (
    HPARAM_BUDGETS,
    HPARAM_TRUTH,
    LADDER_SIZES,
    SEQ_LEN,
    TOKENS_PER_PARAM,
    TRUTH,
    chinchilla_loss,
)

FAST = ["--bootstrap", "8"]


def fit_json(tmp_path: Path, argv: list[str]) -> dict:
    out = tmp_path / "fit.json"
    assert main([*argv, *FAST, "--json", str(out)]) == 0

    def no_nan(word: str) -> None:
        raise AssertionError(f"{word} is not JSON")

    return json.loads(out.read_text(), parse_constant=no_nan)


def assert_figures(directory: Path, names: list[str]) -> None:
    for name in names:
        for suffix in ("png", "svg"):
            assert (directory / f"{name}.{suffix}").stat().st_size > 1000, name


def test_power_in_params_and_compute(ladder_sweep: Path, tmp_path: Path) -> None:
    fit = fit_json(tmp_path, ["power", str(ladder_sweep), "--plot", str(tmp_path / "fig")])
    assert {"law", "params", "ci95", "derived", "n_points"} <= set(fit)
    assert fit["law"] == "power" and fit["n_points"] == 8
    assert fit["params"]["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.01)
    assert fit["params"]["E"] == pytest.approx(TRUTH["E"], abs=0.02)
    lo, hi = fit["ci95"]["alpha"]
    assert lo <= fit["params"]["alpha"] <= hi
    assert_figures(tmp_path / "fig", ["loss_vs_n_params"])

    fit = fit_json(tmp_path, ["power", str(ladder_sweep), "--x", "flops"])
    assert fit["params"]["alpha"] == pytest.approx(TRUTH["alpha"] / 2, abs=0.01)


def test_power_in_compute_from_a_table(tmp_path: Path) -> None:
    # A published-style (C, loss) table: L = E + A' C^-alpha/2 along the ladder (C = 120 N^2).
    table = tmp_path / "compute.csv"
    n_params = np.array(LADDER_SIZES)
    loss = chinchilla_loss(n_params, TOKENS_PER_PARAM * n_params)
    pd.DataFrame({"compute": 6 * TOKENS_PER_PARAM * n_params**2, "L": loss}).to_csv(table)
    argv = ["power", "--csv", str(table), "--c-col", "compute", "--loss-col", "L", "--x", "flops"]
    fit = fit_json(tmp_path, argv)
    assert fit["params"]["alpha"] == pytest.approx(TRUTH["alpha"] / 2, rel=1e-3)
    assert fit["params"]["E"] == pytest.approx(TRUTH["E"], rel=1e-3)


def test_chinchilla_from_runs(isoflop_sweep: Path, tmp_path: Path, capsys) -> None:
    fit = fit_json(tmp_path, ["chinchilla", str(isoflop_sweep), "--plot", str(tmp_path)])
    assert set(fit["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert {"a", "b"} <= set(fit["derived"])
    for name, value in TRUTH.items():
        assert fit["params"][name] == pytest.approx(value, rel=0.02), name
    assert fit["derived"]["a"] == pytest.approx(0.5, abs=0.01)
    assert fit["n_points"] == 15
    printed = capsys.readouterr().out
    assert "2 runs left out: 1 failed, 1 running" in printed
    assert re.search(r"alpha\s+param\s+0\.3", printed)
    assert_figures(tmp_path, ["chinchilla", "frontier_chinchilla"])


def test_chinchilla_from_csv_with_column_names(points_csv: Path, tmp_path: Path) -> None:
    fit = fit_json(
        tmp_path,
        [
            "chinchilla",
            "--csv",
            str(points_csv),
            "--n-col",
            "params",
            "--d-col",
            "data",
            "--loss-col",
            "Loss",
        ],
    )
    assert fit["params"]["alpha"] == pytest.approx(TRUTH["alpha"], rel=0.02)
    assert fit["params"]["E"] == pytest.approx(TRUTH["E"], rel=0.02)


def test_isoflop_from_runs(isoflop_sweep: Path, tmp_path: Path) -> None:
    fit = fit_json(tmp_path, ["isoflop", str(isoflop_sweep), "--plot", str(tmp_path)])
    assert fit["law"] == "isoflop"
    assert fit["derived"]["a"] == pytest.approx(0.5, abs=0.02)
    assert fit["derived"]["b"] == pytest.approx(0.5, abs=0.02)
    assert {"k_N", "k_D"} <= set(fit["derived"])
    # Budgets are the runs' `budget.flops` overrides, not their slightly different FLOPs.
    assert [b["C"] for b in fit["extras"]["budgets"]] == pytest.approx([1e15, 1e16, 1e17])
    assert_figures(tmp_path, ["isoflop", "frontier_isoflop"])


def test_isoflop_json_keeps_bootstrap_draws_capped(isoflop_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "many.json"
    assert main(["isoflop", str(isoflop_sweep), "--bootstrap", "1200", "--json", str(out)]) == 0
    assert out.stat().st_size < 200_000  # 4 x 1000 draws, not 4 x 1200
    many = json.loads(out.read_text())
    fit = fit_json(tmp_path, ["isoflop", str(isoflop_sweep)])  # strict JSON, 8 resamples
    assert many["extras"]["n_bootstrap_ok"] > 1000 and many["extras"]["bootstrap_capped_at"] == 1000
    for document, n_draws in ((many, 1000), (fit, fit["extras"]["n_bootstrap_ok"])):
        draws = document["extras"]["bootstrap"]
        assert set(draws) == {"k_N", "a", "k_D", "b"}
        assert {len(v) for v in draws.values()} == {n_draws}
    assert "bootstrap_capped_at" not in fit["extras"]
    lo, hi = frontier_band(FitResult(**fit), [1e15, 1e18])  # the band can be rebuilt from JSON
    assert np.all(lo < hi)


def test_isoflop_groups_flops_into_budgets(isoflop_sweep: Path, tmp_path: Path, capsys) -> None:
    # The runs' actual FLOPs, up to 4% apart within a budget, as a table without budgets.
    table = tmp_path / "runs.csv"
    completed(load_runs(isoflop_sweep))[["n_params", "tokens", "flops", "val_loss"]].to_csv(table)
    argv = ["isoflop", "--csv", str(table), "--loss-col", "val_loss"]
    fit = fit_json(tmp_path, argv)
    budgets = [b["C"] for b in fit["extras"]["budgets"]]
    assert budgets == pytest.approx([1.02e15, 1.02e16, 1.02e17], rel=0.01)
    assert fit["derived"]["a"] == pytest.approx(0.5, abs=0.02)
    assert main([*argv, *FAST, "--budget-tol", "0.001"]) == 2
    assert "found 15 budgets" in one_line_error(capsys)


def test_envelope_from_training_curves(ladder_sweep: Path, tmp_path: Path) -> None:
    fit = fit_json(tmp_path, ["envelope", str(ladder_sweep), "--plot", str(tmp_path)])
    assert fit["law"] == "envelope"
    assert fit["derived"]["a"] == pytest.approx(0.5, abs=0.1)
    assert_figures(tmp_path, ["curves", "frontier_envelope"])


def test_hparams(hparam_sweep: Path, tmp_path: Path) -> None:
    fit = fit_json(tmp_path, ["hparams", str(hparam_sweep), "--plot", str(tmp_path)])
    assert fit["law"] == "hparams"
    assert fit["params"]["e_lr"] == pytest.approx(HPARAM_TRUTH["e_lr"], abs=0.01)
    assert fit["params"]["e_bs"] == pytest.approx(HPARAM_TRUTH["e_bs"], abs=0.01)
    assert fit["params"]["k_lr"] == pytest.approx(HPARAM_TRUTH["k_lr"], rel=0.05)
    assert_figures(tmp_path, ["hparams"])


def test_hparams_rules_file_holds_the_laws_in_tokens(hparam_sweep: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    assert main(["hparams", str(hparam_sweep), *FAST, "--rules", str(rules)]) == 0
    laws = yaml.safe_load(rules.read_text())
    assert rules.read_text().startswith("# Learning rate and batch size as power laws")
    assert laws["lr"]["exponent"] == pytest.approx(HPARAM_TRUTH["e_lr"], abs=0.01)
    assert laws["lr"]["coefficient"] == pytest.approx(HPARAM_TRUTH["k_lr"], rel=0.05)
    # The runs' batch law is in sequences of SEQ_LEN tokens; the file's is in tokens per step.
    assert laws["batch_tokens"]["exponent"] == pytest.approx(HPARAM_TRUTH["e_bs"], abs=0.01)
    assert laws["batch_tokens"]["coefficient"] == pytest.approx(
        HPARAM_TRUTH["k_bs"] * SEQ_LEN, rel=0.1
    )
    for law in ("lr", "batch_tokens"):
        lo, hi = laws[law]["ci95"]["exponent"]
        assert lo <= laws[law]["exponent"] <= hi
    budgets = [min(HPARAM_BUDGETS), max(HPARAM_BUDGETS)]  # within a step of the nominal
    assert laws["fitted_range"] == pytest.approx(budgets, rel=1e-3)
    assert laws["sources"] == [str(hparam_sweep)]


def test_report_links_existing_figures(isoflop_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.md"
    fits = tmp_path / "fits.json"
    assert main(["report", str(isoflop_sweep), *FAST, "--out", str(out), "--json", str(fits)]) == 0
    text = out.read_text()
    laws = {title: fit["law"] for title, fit in json.loads(fits.read_text()).items()}
    assert sorted(laws.values()) == ["chinchilla", "envelope", "isoflop", "power", "power"]
    for title in ["Power law L(N)", "Chinchilla", "IsoFLOP", "envelope"]:
        assert title in text
    assert "2 runs left out: 1 failed, 1 running" in text
    # Constant learning rate: the hyperparameter fit is skipped with its reason.
    assert "Skipped: the learning rate does not vary" in text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert {"isoflop.png", "chinchilla.png", "frontier_isoflop.png"} <= set(figures)
    assert all((out.parent / name).exists() for name in figures)
    assert all((out.parent / name).with_suffix(".svg").exists() for name in figures)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["power", "{empty}"], "no runs found"),
        (["power"], "give run or sweep directories"),
        (["chinchilla", "--csv", "{csv}", "--n-col", "N"], "no column 'N'"),
        (
            [
                "isoflop",
                "--csv",
                "{csv}",
                "--n-col",
                "params",
                "--d-col",
                "data",
                "--loss-col",
                "Loss",
                "--budget-col",
                "budget",
            ],
            "--budget-col 'budget' is not a column",
        ),
        (["chinchilla", "{ladder}"], "same tokens per parameter"),
        (["isoflop", "{ladder}"], "IsoFLOP needs two or more compute budgets"),
        (["power", "{one_run}"], "power law"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv, message, tmp_path, points_csv, ladder_sweep, capsys
) -> None:
    paths = {
        "empty": tmp_path,
        "csv": points_csv,
        "ladder": ladder_sweep,
        "one_run": ladder_sweep / "0",
    }
    assert main([arg.format(**paths) for arg in argv] + FAST) == 2
    err = one_line_error(capsys)
    assert err.startswith("scaling-fit: error:") and message in err


def test_wandb_offline_run(isoflop_sweep: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["isoflop", str(isoflop_sweep), *FAST, "--wandb"]) == 0
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    media = runs[0] / "files" / "media"
    assert {p.name.split("_0_")[0] for p in media.glob("images/isoflop/*.png")} == {
        "isoflop",
        "frontier_isoflop",
    }
    assert list(media.glob("table/isoflop/fit_*.table.json"))
