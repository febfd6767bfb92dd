"""Sweeps: budgets turned into steps, jobs refused before launch, the summary and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalinglab.train import plan, vocab_size_hint
from tests.conftest import TINY, compose_train, run_cli


@pytest.mark.parametrize("flops", [3e12, 1e13, 3e13, 1e14])
@pytest.mark.parametrize("target_params", [2e5, 1e6, 5e6, 2e7])
def test_flop_budget_is_spent_to_within_one_step(flops: float, target_params: float) -> None:
    cfg = compose_train(
        f"budget.flops={flops}", f"model.target_params={target_params:.0f}", output_dir=Path(".")
    )
    model, tokens_per_step, steps = plan(cfg, vocab_size_hint(cfg.data))
    flops_per_step = tokens_per_step * model.flops_per_token(cfg.data.seq_len)
    assert abs(steps * flops_per_step - flops) <= flops_per_step / 2


def test_token_budgets_are_spent_to_within_one_step() -> None:
    for overrides, tokens in [
        (["budget.tokens=1e7"], lambda model: 1e7),
        (["budget.tokens_per_param=20"], lambda model: 20 * model.n_params),
    ]:
        cfg = compose_train(*overrides, output_dir=Path("."))
        model, tokens_per_step, steps = plan(cfg, 256)
        assert abs(steps * tokens_per_step - tokens(model)) <= tokens_per_step / 2


def test_sweep_with_an_impossible_job_launches_nothing(tmp_path: Path) -> None:
    result = run_cli(
        "-m", *TINY, "budget.flops=1e7,1e10", "budget.min_steps=50", f"paths.output_root={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "1 of 2 jobs refused before launch" in result.stderr
    assert "budget.flops=1e+07 gives 0 steps" in result.stderr
    assert not list(tmp_path.rglob("run.json"))


def test_summary_records_every_outcome_and_a_failure_fails_the_sweep(tmp_path: Path) -> None:
    # One job's corpus is smaller than a batch (fails), one learning rate diverges, one completes.
    result = run_cli(
        "-m", *TINY, "trainer.max_steps=3", "data.n_train_tokens=100,65536", "optimizer.lr=3e-3,1e4",
        "divergence_threshold=6.0", f"paths.output_root={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    rows = json.loads((sweep_dir / "summary.json").read_text())
    by_job = {(("n_train_tokens=100" in r["job"]), r["lr"]): r for r in rows}
    assert len(rows) == 4
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all("fewer than one batch" in r["error"] for r in failed)
    assert by_job[(False, 3e-3)]["status"] == "completed"
    assert by_job[(False, 1e4)]["status"] == "diverged"
    assert (sweep_dir / "summary.csv").read_text().count("\n") == 5


def test_summary_of_a_clean_sweep_and_a_zero_exit(tmp_path: Path) -> None:
    result = run_cli(
        "-m",
        *TINY,
        "trainer.max_steps=3",
        "seed=0,1",
        f"paths.output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    rows = json.loads((sweep_dir / "summary.json").read_text())
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert all(Path(r["path"], "run.json").exists() and r["val_loss"] > 0 for r in rows)
