"""Fixtures: sweeps of fake run directories in a session temporary directory (see fake_runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fake_runs import (
    BATCH_SIZES,
    BUDGETS,
    HPARAM_BUDGETS,
    LADDER_SIZES,
    LEARNING_RATES,
    SIZE_FACTORS,
    TOKENS_PER_PARAM,
    chinchilla_loss,
    hparam_loss,
    optimal_n_params,
    write_run,
)


@pytest.fixture(scope="session")
def isoflop_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three budgets x five model sizes around the optimum (15 completed runs, FLOPs within
    4% of their budget), plus one failed and one running run. Hydra multirun layout."""
    sweep = tmp_path_factory.mktemp("runs") / "multirun" / "isoflop"
    job = 0
    for budget in BUDGETS:
        for i, factor in enumerate(SIZE_FACTORS):
            n_params = optimal_n_params(budget) * factor
            write_run(
                sweep / str(job),
                run_id=f"iso{job:02d}",
                sweep_id="isoflop",
                n_params=n_params,
                tokens=budget / (6 * n_params),
                flops_factor=1.0 + 0.01 * i,
                overrides=[f"model=gpt_{job}", f"budget.flops={budget:g}", "optimizer.lr=0.003"],
            )
            job += 1
    write_run(
        sweep / "failed",
        run_id="iso-failed",
        sweep_id="isoflop",
        n_params=1e6,
        tokens=1e7,
        status="failed",
    )
    write_run(
        sweep / "running",
        run_id="iso-running",
        sweep_id="isoflop",
        n_params=2e6,
        tokens=1e7,
        status="running",
    )
    return sweep


@pytest.fixture(scope="session")
def ladder_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model-size ladder at 20 tokens per parameter with dense training curves. With
    D = 20 N the law is a pure power law, L(N) = E + (A + B 20^-beta) N^-alpha, and in compute
    C = 120 N^2 its exponent is alpha / 2."""
    sweep = tmp_path_factory.mktemp("runs") / "ladder"
    for k, n_params in enumerate(LADDER_SIZES):
        write_run(
            sweep / str(k),
            run_id=f"lad{k}",
            sweep_id="ladder",
            n_params=n_params,
            tokens=TOKENS_PER_PARAM * n_params,
            n_logged=40,
            overrides=[f"model=gpt_{k}", "optimizer.lr=0.003"],
        )
    return sweep


@pytest.fixture(scope="session")
def hparam_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """For each budget, one model trained at every (lr, batch size) of a 9x7 grid."""
    sweep = tmp_path_factory.mktemp("runs") / "hparams"
    job = 0
    for budget in HPARAM_BUDGETS:
        n_params = optimal_n_params(budget)
        for lr in LEARNING_RATES:
            for batch_size in BATCH_SIZES:
                write_run(
                    sweep / str(job),
                    run_id=f"hp{job:03d}",
                    sweep_id="hparams",
                    n_params=n_params,
                    tokens=budget / (6 * n_params),
                    lr=lr,
                    batch_size=batch_size,
                    loss=float(hparam_loss(budget, lr, batch_size)),
                    overrides=[f"optimizer.lr={lr}", f"data.batch_size={batch_size}"],
                    n_logged=2,
                )
                job += 1
    return sweep


@pytest.fixture(scope="session")
def points_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published-style table with its own column names: params, data, Loss."""
    path = tmp_path_factory.mktemp("csv") / "points.csv"
    rows = ["params,data,Loss"]
    for budget in BUDGETS:
        for factor in SIZE_FACTORS:
            n_params = optimal_n_params(budget) * factor
            tokens = budget / (6 * n_params)
            rows.append(f"{n_params:.6g},{tokens:.6g},{chinchilla_loss(n_params, tokens):.6f}")
    path.write_text("\n".join(rows) + "\n")
    return path
