"""Fake run directories, written the way training writes them (run.json, metrics.csv, .hydra/),
from known laws; `conftest.py` turns them into fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

# L(N, D) = E + A/N^alpha + B/D^beta with alpha = beta, so N_opt ∝ C^0.5 and D_opt ∝ C^0.5;
# A/B puts the optimum near 20 tokens per parameter.
TRUTH = {"E": 1.8, "A": 40.0, "B": 98.0, "alpha": 0.3, "beta": 0.3}
BUDGETS = [1e15, 1e16, 1e17]
SIZE_FACTORS = [0.25, 0.5, 1.0, 2.0, 4.0]
SEQ_LEN = 256
TOKENS_PER_STEP = 16 * SEQ_LEN  # at the default batch_size
VOCAB_SIZE = 512


def chinchilla_loss(n_params: float, tokens: float) -> float:
    t = TRUTH
    return t["E"] + t["A"] / n_params ** t["alpha"] + t["B"] / tokens ** t["beta"]


def optimal_n_params(budget: float) -> float:
    # dL/dN = 0 on N·D = C/6 with alpha = beta gives N_opt = (A/B)^(1/alpha)^(1/2) (C/6)^(1/2).
    ratio = (TRUTH["A"] / TRUTH["B"]) ** (1 / TRUTH["alpha"])
    return ratio**0.5 * (budget / 6) ** 0.5


def built_model(overrides: list[str]) -> dict:
    """run.json's model: the shape as built, which the job's model.* overrides set."""
    model = {"d_model": 64, "n_layers": 2, "n_heads": 2, "d_ff": 256, "vocab_size": 512}
    for override in overrides:
        key, _, value = override.partition("=")
        if key.startswith("model.") and key.count(".") == 1:
            model[key.removeprefix("model.")] = yaml.safe_load(value)
    return model


def write_run(
    job_dir: Path,
    *,
    run_id: str,
    sweep_id: str,
    n_params: float,
    tokens: float,
    status: str = "completed",
    lr: float = 3e-3,
    batch_size: int = 16,
    loss: float | None = None,
    flops_factor: float = 1.0,
    overrides: list[str] | None = None,
    n_logged: int = 8,
    seed: int = 0,
) -> Path:
    """One job directory: .hydra/, run.json, metrics.csv, checkpoints/."""
    n_params = int(n_params)
    tokens_per_step = batch_size * SEQ_LEN
    steps = max(1, round(tokens / tokens_per_step))
    tokens = steps * tokens_per_step
    flops_per_token = 6.0 * n_params * flops_factor
    final_loss = chinchilla_loss(n_params, tokens) if loss is None else loss
    overrides = overrides or [f"model.n_params={n_params}", f"optimizer.lr={lr}"]
    finished = status == "completed"

    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / "checkpoints").mkdir()
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    record = {
        "run_id": run_id,
        "sweep_id": sweep_id,
        "name": job_dir.name,
        "status": status,
        "overrides": overrides,
        "git_commit": "0" * 40,
        "git_dirty": False,
        "seed": seed,
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T01:00:00+00:00" if status != "running" else None,
        "hostname": "test",
        "model": built_model(overrides),
        "n_params": n_params,
        "n_params_nonembedding": n_params - 64 * VOCAB_SIZE,
        "flops_per_token": flops_per_token,
        "flops_per_token_6n": 6.0 * n_params,
        "tokens_per_step": tokens_per_step,
        "batch_size": batch_size,
        "seq_len": SEQ_LEN,
        "lr": lr,
        "max_steps": steps,
        "steps": steps if finished else None,
        "tokens": tokens if finished else None,
        "flops": tokens * flops_per_token if finished else None,
        "train_loss": final_loss + 0.01 if finished else None,
        "val_loss": final_loss if finished else None,
        "best_val_loss": final_loss if finished else None,
        "wall_time_s": 3600.0,
        "irreducible_loss": TRUTH["E"],
        "data": {"name": "synthetic", "fingerprint": "abc", "tokenizer": "byte", "vocab_size": 512},
    }
    if status == "failed":
        record["error"] = "RuntimeError: boom"
    (job_dir / "run.json").write_text(json.dumps(record))

    # Logged steps follow the same law in the tokens seen so far; validation on every other one.
    logged_steps = np.unique(np.geomspace(1, steps, n_logged).round().astype(int))
    lines = ["step,tokens,flops,lr,train/loss,val/loss,perf/tokens_per_sec"]
    for i, step in enumerate(logged_steps):
        seen = step * tokens_per_step
        step_loss = chinchilla_loss(n_params, seen) if loss is None else loss
        val = f"{step_loss:.6f}" if i % 2 == 1 or step == steps else ""
        lines.append(
            f"{step},{seen},{seen * flops_per_token},{lr},{step_loss + 0.01:.6f},{val},1e5"
        )
    (job_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    return job_dir


LADDER_SIZES = [1e5 * 2**k for k in range(8)]
TOKENS_PER_PARAM = 20


# Learning-rate x batch-size grid: loss is a bowl in (log10 lr, log10 batch) whose centre
# moves with compute by exactly one grid step per decade, so each optimum is a grid point:
# lr_opt = 1e-2 (C/1e15)^-0.15, batch_opt = 32 (C/1e15)^log10(2).
HPARAM_BUDGETS = [1e15, 1e16, 1e17]
LEARNING_RATES = [1e-2 * 10 ** (0.15 * j) for j in range(-5, 4)]
BATCH_SIZES = [8, 16, 32, 64, 128, 256, 512]
HPARAM_TRUTH = {
    "k_lr": 1e-2 * 1e15**0.15,
    "e_lr": -0.15,
    "k_bs": 32 * 1e15 ** -np.log10(2),
    "e_bs": np.log10(2),
}


def hparam_loss(budget: float, lr: float, batch_size: float) -> float:
    decades = np.log10(budget / 1e15)
    lr_opt = 1e-2 * 10 ** (-0.15 * decades)
    batch_opt = 32 * 2**decades
    base = 2.0 + (budget / 1e15) ** -0.1
    return base + np.log10(lr / lr_opt) ** 2 + 0.5 * np.log10(batch_size / batch_opt) ** 2
