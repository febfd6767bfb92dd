"""Sweeps: budgets turned into steps, jobs refused before launch, the summary and exit codes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalinglab.planning import plan
from tests.conftest import TINY, budgeted, compose_train, run_cli


# Step counts worked out by hand, not with the code under test. The default data (python_stdlib,
# bytes: V = 256) at batch 16 x seq_len 128 gives 2048 tokens a step; max_seq_len = seq_len = T.
#   gpt_tiny (d 256, 4 layers, d_ff 1024): N = 256*256 + 128*256 (token and position embeddings)
#     + 4*(2*256 + 4*256^2 + 2*256*1024) (norms, attention, MLP) + 256 (final norm) = 3,246,336;
#     FLOPs/token = 6*(4*(4*256^2 + 2*256*1024) + 256*256) + 12*4*128*256 = 20,840,448.
#   gpt_nano (d 64, 1 layer, d_ff 256): N = 73,920; FLOPs/token = 491,520.
@pytest.mark.parametrize(
    "overrides, tokens_per_step, steps",
    [
        (["budget.tokens=1e7"], 2048, 4883),  # 1e7 / 2048 = 4882.8
        (["budget.tokens_per_param=10"], 2048, 15851),  # 10 * 3,246,336 / 2048 = 15851.25
        (["budget.flops=1e15"], 2048, 23429),  # 1e15 / (2048 * 20,840,448) = 23429.499
        (["model=gpt_nano", "budget.flops=1e13"], 2048, 9934),  # 1e13 / (2048 * 491,520) = 9934.1
        (["model=gpt_nano", "budget.tokens_per_param=20"], 2048, 722),  # 1,478,400 / 2048 = 721.9
        # Tokens per step count every accumulated batch: 8 x 128 x 4.
        (["data.batch_size=8", "trainer.accumulate_grad_batches=4", "budget.tokens=1e7"], 4096, 2441),
        (["trainer.max_steps=123"], 2048, 123),
    ],
)  # fmt: skip
def test_budget_gives_the_steps_worked_out_by_hand(
    overrides: list[str], tokens_per_step: int, steps: int
) -> None:
    job = plan(compose_train(*overrides, output_dir=Path(".")))
    assert (job.tokens_per_step, job.steps) == (tokens_per_step, steps)


def test_sweep_with_an_impossible_job_launches_nothing(tmp_path: Path) -> None:
    result = run_cli(
        "-m", *budgeted(TINY), "budget.flops=1e7,1e10", "budget.min_steps=50", f"paths.output_root={tmp_path}",
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


@pytest.mark.faults  # an injected crash or signal: CI's faults step
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopped_sweep_relaunches_to_each_job_completed_once(
    stop: signal.Signals, tmp_path: Path
) -> None:
    args = [
        "-m", *TINY, "trainer.max_steps=24", "trainer.val_check_interval=4", "model.d_model=64,128",
        f"paths.output_root={tmp_path}", "logger=wandb",
    ]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "scalinglab.train", *args], cwd=tmp_path, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )  # fmt: skip
    # Stop it once the second job has a checkpoint: the first is done, the second half-way.
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("sweeps/*/*model.d_model=128*/checkpoints/last.ckpt")):
        assert first.poll() is None and time.monotonic() < deadline, "sweep ended before the stop"
        time.sleep(0.2)
    os.killpg(first.pid, stop)
    first.wait(timeout=60)
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    interrupted = json.loads(next(sweep_dir.glob("*model.d_model=128*/run.json")).read_text())
    # SIGTERM: checkpointed and `interrupted`; SIGKILL leaves `running` behind (read as `lost`)
    assert interrupted["status"] == ("interrupted" if stop == signal.SIGTERM else "running")

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    records = {
        r["model"]["d_model"]: r
        for r in map(json.loads, map(Path.read_text, sweep_dir.glob("*/run.json")))
    }
    assert sorted(records) == [64, 128]
    assert all(r["status"] == "completed" and r["steps"] == 24 for r in records.values())
    assert (records[64]["attempts"], records[128]["attempts"]) == (
        1,
        2,
    )  # the finished job not rerun
    assert "resuming" in again.stdout + again.stderr  # from its checkpoint, not from scratch
    for job_dir in sweep_dir.glob("*model.d_model=*"):
        steps = [int(r["step"]) for r in csv.DictReader((job_dir / "metrics.csv").open())]
        # Each step logged once, none lost: the checkpoint's step was on disk before the stop.
        assert steps == list(range(1, 25)), job_dir.name
    # One W&B run per job: a resumed job continued its run (same id) rather than starting another.
    wandb_ids = {p.name.rsplit("-", 1)[-1] for p in sweep_dir.glob("*/wandb/offline-run-*")}
    assert len(wandb_ids) == 2


def test_demo_centres_each_budgets_widths_on_its_guess_of_the_optimum() -> None:
    """IsoFLOP sizes 1.35x apart around d ~ 14 (C / 1e11)^0.25: the centre grows with the budget
    and every job's schedule spans the steps that spend its budget."""

    def job(budget: str, step: int):
        cfg = compose_train("sweep=demo", f"budget.flops={budget}", f"size_step={step}")
        return cfg.model.d_model, plan(cfg).steps, cfg.trainer.val_check_interval

    centres = []
    for budget in ("4e10", "8e10", "1.6e11", "3.2e11"):
        widths = [job(budget, k)[0] for k in range(-2, 3)]
        assert widths == sorted(set(widths))  # five distinct widths
        assert widths[-1] / widths[0] == pytest.approx(1.35**4, rel=0.15)
        centres.append(widths[2])
        d_model, steps, val_every = job(budget, 0)
        assert d_model == round(14 * (float(budget) / 1e11) ** 0.25)
        assert val_every == -(-steps // 8)  # 8 validations a run
    assert centres == sorted(centres) and centres[0] < centres[-1]


@pytest.mark.parametrize(
    "study", sorted(p.stem for p in (Path(__file__).parents[1] / "sweeps").glob("*.yaml"))
)
def test_every_job_of_every_study_is_planned(study: str) -> None:
    """Each study's grid composes and every job gets a positive step count before any launch."""
    import itertools

    import yaml

    params = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / f"{study}.yaml").read_text())
    grid = params["hydra"]["sweeper"]["params"]
    for values in itertools.product(*(str(v).split(",") for v in grid.values())):
        overrides = [f"{key}={value}" for key, value in zip(grid, values, strict=True)]
        cfg = compose_train(f"sweep={study}", *overrides, output_dir=Path("."))
        steps = plan(cfg).steps
        assert steps >= max(1, cfg.budget.min_steps), overrides


def test_summary_is_updated_as_each_job_ends_under_a_relative_output_root(tmp_path: Path) -> None:
    # The README's commands keep the default, relative paths.output_root (outputs/).
    result = run_cli("-m", *TINY, "trainer.max_steps=3", "seed=0,1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SweepSummary.on_job_end raised" not in result.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    rows = json.loads((sweep_dir / "summary.json").read_text())
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert all(
        Path(r["path"]).is_absolute() and (Path(r["path"]) / "run.json").exists() for r in rows
    )
