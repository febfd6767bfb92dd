"""Optimal learning rate and batch size as laws of N and D (`scaling-fit hparams --law nd`), on
synthetic loss surfaces whose optimum at every (N, D) is known, and the rules file training reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from scalinglab.analysis.cli import main
from scalinglab.analysis.laws.hparams_nd import ND_PARAMS, fit_hparams_nd, plot_hparams_nd
from tests.conftest import compose_train

# Step-Law-like truth: lr_opt falls with N and rises with D; batch_opt depends on D alone.
TRUTH = {
    "k_lr": 2.0,
    "alpha_lr": -0.7,
    "beta_lr": 0.3,
    "k_bs": 0.6,
    "alpha_bs": 0.0,
    "beta_bs": 0.57,
}
SIZES = np.geomspace(1e6, 1e8, 3)
TOKENS = np.geomspace(2e8, 2e10, 3)
STEPS = 2.0 ** (np.arange(-4, 5) / 2)  # a half-octave grid, 9 points


def lr_opt(N, D):
    return TRUTH["k_lr"] * N ** TRUTH["alpha_lr"] * D ** TRUTH["beta_lr"]


def batch_opt(N, D):
    return TRUTH["k_bs"] * N ** TRUTH["alpha_bs"] * D ** TRUTH["beta_bs"]


def nd_surface(seed: int = 0, noise: float = 0.002, sizes=SIZES, tokens=TOKENS):
    """Every (N, D) cell's lr x batch grid, centred on a guess up to 1.6x off its optimum (as a
    sweep centres its grids), and the loss: a bowl in (log2 lr, log2 batch) around the known
    optimum on top of L(N, D), with multiplicative noise. Returns N, D, lr, batch, loss."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in sizes:
        for D in tokens:
            lr_guess, bs_guess = np.exp(rng.uniform(-0.45, 0.45, 2))
            for lr in lr_opt(N, D) * lr_guess * STEPS:
                for batch in batch_opt(N, D) * bs_guess * STEPS:
                    rows.append((N, D, lr, batch))
    N, D, lr, batch = np.array(rows).T
    loss = (
        1.8
        + 400 * N**-0.34
        + 410 * D**-0.28
        + 0.05 * np.log2(lr / lr_opt(N, D)) ** 2
        + 0.02 * np.log2(batch / batch_opt(N, D)) ** 2
    )
    return N, D, lr, batch, loss * np.exp(noise * rng.standard_normal(N.size))


@pytest.fixture(scope="module")
def nd_fit():
    return fit_hparams_nd(*nd_surface(), n_bootstrap=60, seed=0)


def test_nd_laws_recover_the_exponents(nd_fit) -> None:
    fit = nd_fit
    assert fit.law == "hparams_nd" and fit.trusted, fit.failed_checks
    assert set(fit.params) == set(ND_PARAMS) == set(fit.ci95)
    for name in ("alpha_lr", "beta_lr", "alpha_bs", "beta_bs"):
        assert fit.params[name] == pytest.approx(TRUTH[name], abs=0.05), name
        lo, hi = fit.ci95[name]
        assert lo <= fit.params[name] <= hi and hi - lo < 0.2, name
    N, D = 3e7, 5e9  # inside the fitted range, not a cell
    predicted = fit.predict(N, D)
    assert predicted["lr"] == pytest.approx(lr_opt(N, D), rel=0.3)
    assert predicted["batch_size"] == pytest.approx(batch_opt(N, D), rel=0.3)
    assert len(fit.extras["cells"]) == len(SIZES) * len(TOKENS)
    json.dumps(fit.to_dict())


def test_nd_figure_draws_each_cell_and_the_law_at_each_level(nd_fit) -> None:
    lr_panel, batch_panel, *_ = plot_hparams_nd(nd_fit).axes  # then the two colorbars
    assert "N^-0.7" in lr_panel.get_title() and "D^0.5" in batch_panel.get_title()
    for panel, levels in ((lr_panel, TOKENS), (batch_panel, SIZES)):
        assert len(panel.containers) == len(SIZES) * len(TOKENS)  # one error bar per cell
        laws = [line for line in panel.get_lines() if line.get_linestyle() == "-"]
        assert len(laws) == len(levels)


def test_nd_law_refused_trust_without_independent_n_and_d() -> None:
    # One token count per model size (a fixed tokens-per-parameter ladder): D is a function of N.
    N, D, lr, batch, loss = nd_surface(seed=1, sizes=SIZES, tokens=TOKENS)
    ladder = np.isclose(np.log(D / N), np.log(TOKENS[0] / SIZES[0]))
    fit = fit_hparams_nd(
        N[ladder], D[ladder], lr[ladder], batch[ladder], loss[ladder], n_bootstrap=10
    )
    failed = {c["name"]: c["detail"] for c in fit.failed_checks}
    assert "design" in failed and not fit.trusted
    assert "N and D" in failed["design"] or "cells" in failed["design"]


def test_nd_cells_group_runs_a_step_apart() -> None:
    # A run's tokens land a step apart across batch sizes: still one cell.
    N, D, lr, batch, loss = nd_surface(seed=2)
    jitter = 1 + 0.01 * np.random.default_rng(0).uniform(-1, 1, D.size)
    fit = fit_hparams_nd(N, D * jitter, lr, batch, loss, n_bootstrap=0, check_extrapolation=False)
    assert len(fit.extras["cells"]) == len(SIZES) * len(TOKENS)


def write_csv(path: Path, seed: int = 0, **columns) -> Path:
    N, D, lr, batch, loss = nd_surface(seed=seed)
    table = pd.DataFrame({"N": N, "D": D, "peak_lr": lr, "batch_tok": batch, "val": loss})
    for name, values in columns.items():
        table[name] = values
    table.to_csv(path, index=False)
    return path


ND_ARGS = ["--law", "nd", "--n-col", "N", "--d-col", "D", "--lr-col", "peak_lr"]
ND_ARGS += ["--batch-col", "batch_tok", "--loss-col", "val", "--bootstrap", "20"]


def test_cli_nd_law_from_csv_to_rules_to_a_job(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "grid.csv")
    out, rules = tmp_path / "fit.json", tmp_path / "rules.yaml"
    argv = ["hparams", "--csv", str(csv), *ND_ARGS, "--json", str(out), "--rules", str(rules)]
    assert main(argv) == 0
    fit = json.loads(out.read_text())
    assert fit["law"] == "hparams_nd" and fit["trusted"]
    assert set(fit["params"]) == set(ND_PARAMS)
    assert fit["params"]["beta_bs"] == pytest.approx(TRUTH["beta_bs"], abs=0.05)
    laws = yaml.safe_load(rules.read_text())
    assert rules.read_text().startswith(
        "# Learning rate and batch size as power laws of parameters"
    )
    assert laws["form"] == "nd" and laws["trusted"]
    assert laws["lr"]["exponent_n"] == pytest.approx(fit["params"]["alpha_lr"])
    assert laws["lr"]["exponent_d"] == pytest.approx(fit["params"]["beta_lr"])
    assert laws["batch_tokens"]["exponent_d"] == pytest.approx(fit["params"]["beta_bs"])
    lo, hi = laws["lr"]["ci95"]["exponent_n"]
    assert lo <= laws["lr"]["exponent_n"] <= hi
    assert laws["fitted_range"]["n_params"] == pytest.approx([SIZES[0], SIZES[-1]])
    assert laws["fitted_range"]["tokens"] == pytest.approx([TOKENS[0], TOKENS[-1]])

    # hparams=fitted applies the nd form at the job's own N (plan.n_params) and D (its budget).
    cfg = compose_train(
        "hparams=fitted", f"hparams_file={rules}", "budget.tokens=1e9", "data.seq_len=128"
    )
    N, lr, batch = cfg.plan.n_params, laws["lr"], laws["batch_tokens"]
    assert cfg.plan.tokens == 1e9
    assert cfg.optimizer.lr == pytest.approx(
        lr["coefficient"] * N ** lr["exponent_n"] * 1e9 ** lr["exponent_d"]
    )
    tokens_per_step = batch["coefficient"] * N ** batch["exponent_n"] * 1e9 ** batch["exponent_d"]
    assert cfg.data.batch_size == max(1, round(tokens_per_step / 128))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and "Warning" not in err
    return err


def test_cli_refuses_non_positive_compute_in_one_line(tmp_path: Path, capsys) -> None:
    N, D, lr, batch, loss = nd_surface(seed=3)
    budget = 6 * N * D
    budget[5] = 0.0
    budget[7] = -1e18
    csv = write_csv(tmp_path / "grid.csv", seed=3, C=budget)
    argv = [
        "hparams",
        "--csv",
        str(csv),
        "--n-col",
        "N",
        "--lr-col",
        "peak_lr",
        "--batch-col",
        "batch_tok",
        "--loss-col",
        "val",
    ]
    assert main([*argv, "--budget-col", "C", "--bootstrap", "0"]) == 2
    assert one_line_error(capsys).startswith(
        "scaling-fit: error: compute (C) must be positive and finite in every run: 2 are not "
        "(the first, run 5, has 0.0)"
    )
    # --c-col: the table's reader refuses it (naming the line), before any fit.
    assert main([*argv, "--c-col", "C", "--bootstrap", "0"]) == 2
    assert "column 'C' must hold positive, finite numbers; line 7 has 0.0" in one_line_error(capsys)


def test_cli_nd_refuses_non_positive_tokens_and_rules_in_sequences(tmp_path: Path, capsys) -> None:
    csv = write_csv(tmp_path / "grid.csv")
    table = pd.read_csv(csv)
    table.loc[3, "D"] = 0
    table.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["hparams", "--csv", str(tmp_path / "bad.csv"), *ND_ARGS]) == 2
    assert "column 'D' must hold positive, finite numbers; line 5 has" in one_line_error(capsys)
    # Without --batch-col the batch size is in sequences: no rules file for training.
    argv = [a for a in ND_ARGS if a not in ("--batch-col", "batch_tok")]
    table = pd.read_csv(csv).rename(columns={"batch_tok": "batch_size"})
    table.to_csv(tmp_path / "seq.csv", index=False)
    rules = tmp_path / "rules.yaml"
    assert main(["hparams", "--csv", str(tmp_path / "seq.csv"), *argv, "--rules", str(rules)]) == 2
    assert "needs the batch law in tokens per step" in one_line_error(capsys)
    assert not rules.exists()


def test_cli_nd_law_from_run_directories(tmp_path: Path) -> None:
    """Run records give N (n_params), D (tokens trained, a step apart across batch sizes) and the
    batch in tokens per step: the rules file is written from them."""
    from .fake_runs import SEQ_LEN, write_run

    job = 0
    for N in SIZES[:2] / 100:  # 1e4 and 1e5 parameters: small enough for fake records
        for D in TOKENS / 100:
            for lr in lr_opt(N, D) * 2.0 ** np.arange(-2, 3):
                for sequences in 2 ** np.arange(4, 9):
                    batch = sequences * SEQ_LEN
                    loss = 2 + 0.05 * np.log2(lr / lr_opt(N, D)) ** 2
                    loss += 0.02 * np.log2(batch / batch_opt(N, D)) ** 2
                    write_run(
                        tmp_path / "sweep" / str(job),
                        run_id=f"nd{job:03d}",
                        sweep_id="nd",
                        n_params=N,
                        tokens=D,
                        lr=float(lr),
                        batch_size=int(sequences),
                        loss=float(loss),
                        overrides=[f"optimizer.lr={lr:.6g}", f"data.batch_size={sequences}"],
                        n_logged=2,
                    )
                    job += 1
    rules, out = tmp_path / "rules.yaml", tmp_path / "fit.json"
    argv = ["hparams", str(tmp_path / "sweep"), "--law", "nd", "--bootstrap", "10"]
    assert main([*argv, "--json", str(out), "--rules", str(rules), "--untrusted-ok"]) == 0
    fit = json.loads(out.read_text())
    assert len(fit["extras"]["cells"]) == 6 and fit["extras"]["batch_unit"] == "tokens"
    assert fit["params"]["alpha_lr"] == pytest.approx(TRUTH["alpha_lr"], abs=0.05)
    assert fit["params"]["beta_lr"] == pytest.approx(TRUTH["beta_lr"], abs=0.05)
    assert yaml.safe_load(rules.read_text())["form"] == "nd"
