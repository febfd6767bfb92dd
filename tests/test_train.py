"""Training end to end on the CPU: the run record, multiruns with W&B, resume, and bad input."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from scalinglab.callbacks import StepMetrics
from scalinglab.data import write_shard
from scalinglab.errors import ConfigError
from scalinglab.job import shows_progress_bar
from scalinglab.records import METRIC_COLUMNS, git_state
from scalinglab.sweeping import stale_jobs
from scalinglab.train import train
from tests.conftest import TINY, TINY_TRAINING, budgeted, compose_train, run_cli


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_cli_run_writes_every_record(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(*TINY, "trainer.max_steps=3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["steps"] == 3 and record["tokens"] == 3 * 4 * 32
    assert record["flops"] == record["tokens"] * record["flops_per_token"]
    for key in ("run_id", "sweep_id", "git_commit", "seed", "model", "n_params",
                "n_params_nonembedding", "flops_per_token_6n", "tokens_per_step", "lr",
                "batch_size", "train_loss", "val_loss", "best_val_loss", "wall_time_s",
                "irreducible_loss", "data"):  # fmt: skip
        assert record.get(key) is not None, key
    rows = read_metrics(run_dir)
    assert list(rows[0])[: len(METRIC_COLUMNS)] == METRIC_COLUMNS
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert rows[-1]["val/loss"] and float(rows[-1]["val/loss"]) == pytest.approx(record["val_loss"])
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert {"config.yaml", "overrides.yaml"} <= {p.name for p in (run_dir / ".hydra").iterdir()}


def wandb_run_group(run_dir: Path) -> tuple[str, str]:
    """(run id, group) read back from an offline W&B run's transaction log."""
    from tests.test_wandb import wandb_records

    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "run":
            return record.run.run_id, record.run.run_group
    raise AssertionError(f"no run record in {run_dir}")


def test_multirun_2x2_gives_4_jobs_and_4_wandb_runs_in_one_group(tmp_path: Path) -> None:
    args = [*TINY, "trainer.max_steps=3", f"paths.output_root={tmp_path / 'out'}", "logger=wandb"]
    sweep = ["-m", "model=gpt_nano,gpt_micro", "optimizer.lr=1e-3,3e-3", *args[1:]]
    result = run_cli(*sweep, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    (sweep_dir,) = (tmp_path / "out" / "sweeps").iterdir()
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/run.json")]
    assert len(records) == 4
    assert all(r["status"] == "completed" for r in records)
    assert {(r["model"]["d_model"], r["lr"]) for r in records} == {
        (64, 1e-3), (64, 3e-3), (128, 1e-3), (128, 3e-3)
    }  # fmt: skip
    wandb_runs = [wandb_run_group(p) for p in sweep_dir.glob("*/wandb/offline-run-*")]
    assert len(wandb_runs) == 4
    assert {run_id for run_id, _ in wandb_runs} == {r["run_id"] for r in records}
    assert {group for _, group in wandb_runs} == {sweep_dir.name}

    # The same command again finds the same directories and skips every completed job.
    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("is completed: skipping") == 4
    assert len(list(sweep_dir.glob("*/wandb/offline-run-*"))) == 4


class CrashAt(pl.Callback):
    """Kills training after a given step, as a pre-empted or crashed job would be."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


class RecordSteps(pl.Callback):
    """Every step's training loss and learning rate, as the optimizer step saw them."""

    losses: dict[int, float] = {}
    lrs: dict[int, float] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, *args) -> None:
        type(self).losses[trainer.global_step] = outputs["loss"].item()
        type(self).lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]

    @classmethod
    def check(cls, row: dict[str, str]) -> None:
        """That a metrics.csv row holds its own step's loss and learning rate."""
        step = int(row["step"])
        assert float(row["train/loss"]) == pytest.approx(cls.losses[step], rel=1e-6), step
        assert float(row["lr"]) == pytest.approx(cls.lrs[step], rel=1e-12), step


@pytest.mark.parametrize("val_every", [3, 10], ids=["row-then-validation", "rows-only"])
def test_metrics_are_logged_every_log_every_n_steps(tmp_path: Path, val_every: int) -> None:
    """Rows on every log_every_n_steps-th step and the last, each complete and holding its own
    step's figures, whether a validation follows the step or not. (Rows that wait for a GPU to
    finish their step: test_rows_wait_for_the_gpu_and_keep_their_own_step.)"""
    RecordSteps.losses, RecordSteps.lrs = {}, {}
    drop = ("trainer.log_every_n_steps", "trainer.max_steps", "trainer.val_check_interval")
    every_third = [o for o in TINY if not o.startswith(drop)]
    overrides = [*every_third, "trainer.log_every_n_steps=3", "trainer.max_steps=10"]
    record = f"+callbacks.steps._target_={__name__}.RecordSteps"
    result = train(
        compose_train(
            *overrides, f"trainer.val_check_interval={val_every}", record, output_dir=tmp_path
        )
    )
    rows = read_metrics(tmp_path)
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 10]
    for row in rows:
        assert all(row[k] for k in ("train/loss", "tokens", "flops", "lr")), row
        RecordSteps.check(row)
        step = int(row["step"])
        assert float(row["tokens"]) == step * result["tokens_per_step"]
        assert bool(row["val/loss"]) == (step % val_every == 0 or step == 10)
    assert all(row["perf/tokens_per_sec"] for row in rows[1:])


def test_validations_between_logged_steps_have_their_tokens_and_flops(tmp_path: Path) -> None:
    """A validation on a step with no training row is still placed on the tokens and FLOPs axes
    (training curves are drawn against them)."""
    drop = ("trainer.log_every_n_steps", "trainer.max_steps", "trainer.val_check_interval")
    overrides = [o for o in TINY if not o.startswith(drop)]
    overrides += ["trainer.log_every_n_steps=5", "trainer.max_steps=10"]
    result = train(compose_train(*overrides, "trainer.val_check_interval=3", output_dir=tmp_path))
    validations = {int(r["step"]): r for r in read_metrics(tmp_path) if r["val/loss"]}
    assert sorted(validations) == [3, 6, 9, 10]
    for step, row in validations.items():
        tokens = step * result["tokens_per_step"]
        assert float(row["tokens"]) == tokens
        assert float(row["flops"]) == tokens * result["flops_per_token"]


class LateEvent:
    """A CUDA event's stand-in on a CPU: its step is done only at the third step end after it."""

    def __init__(self) -> None:
        self.polls = 0

    def query(self) -> bool:
        self.polls += 1
        return self.polls >= 3

    def synchronize(self) -> None:
        self.polls = 3

    def elapsed_time(self, other: LateEvent) -> float:
        return 1.0


def test_rows_wait_for_the_gpu_and_keep_their_own_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a GPU, each logged step's row waits until its step is done, two steps later here, or
    until a checkpoint or validation (every 3 steps) waits for all: every row still holds its own
    step's loss and learning rate, in order."""
    RecordSteps.losses, RecordSteps.lrs = {}, {}
    monkeypatch.setattr(StepMetrics, "_to_host", staticmethod(lambda loss: (loss, LateEvent())))
    record = f"+callbacks.steps._target_={__name__}.RecordSteps"
    train(compose_train(*TINY, "trainer.max_steps=8", record, output_dir=tmp_path))
    rows = read_metrics(tmp_path)
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    for row in rows:
        RecordSteps.check(row)
    assert all(row["perf/tokens_per_sec"] for row in rows[1:])


class RecordOptimizerSteps(pl.Callback):
    """Records, at each optimizer step, the gradient norm the optimizer sees and its `fused` flag."""

    norms: list[float] = []
    fused: list[bool] = []

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        step = optimizer.step

        def recorded_step(closure):
            def closure_then_record():  # Lightning's closure: forward, backward and clipping
                loss = closure()
                grads = [p.grad.float().norm() for p in module.parameters() if p.grad is not None]
                type(self).norms.append(torch.stack(grads).norm().item())
                type(self).fused.append(bool(optimizer.defaults["fused"]))
                return loss

            return step(closure_then_record)

        optimizer.step = recorded_step


def test_fused_adamw_under_bf16_clips_gradients(tmp_path: Path) -> None:
    """The GPU default (fused AdamW, bf16-mixed), on the CPU: Lightning refuses to clip for a fused
    optimizer, so scalinglab clips itself, and the optimizer steps with norms of at most the bound."""
    RecordOptimizerSteps.norms, RecordOptimizerSteps.fused = [], []
    result = train(
        compose_train(
            *TINY,
            "optimizer.fused=true",
            "trainer.precision=bf16-mixed",
            "trainer.gradient_clip_val=0.05",
            f"+callbacks.record._target_={__name__}.RecordOptimizerSteps",
            output_dir=tmp_path,
        )
    )
    assert result["status"] == "completed"
    assert RecordOptimizerSteps.fused == [True] * 6
    assert max(RecordOptimizerSteps.norms) == pytest.approx(0.05, rel=1e-3)  # clipped every step


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    straight = train(compose_train(*TINY, output_dir=tmp_path / "straight"))

    crash = [*TINY, f"+callbacks.crash._target_={__name__}.CrashAt", "+callbacks.crash.step=5"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_train(*crash, output_dir=tmp_path / "resumed"))
    crashed = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert crashed["status"] == "failed" and "simulated crash" in crashed["error"]
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3  # the last checkpoint before the crash

    resumed = train(compose_train(*TINY, output_dir=tmp_path / "resumed"))
    assert resumed["status"] == "completed" and resumed["attempts"] == 2
    assert resumed["steps"] == straight["steps"] == 6
    assert resumed["tokens"] == straight["tokens"]
    # Same data position, optimizer and schedule state: the curves agree step by step.
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [str(s) for s in range(1, 7)]
    for row_a, row_b in zip(a, b, strict=True):
        assert float(row_a["train/loss"]) == pytest.approx(float(row_b["train/loss"]), abs=1e-5)
        assert row_a["lr"] == row_b["lr"]
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-5)

    # A completed job is skipped, not retrained.
    assert train(compose_train(*TINY, output_dir=tmp_path / "resumed"))["attempts"] == 2


def test_target_params_records_how_far_the_count_landed(tmp_path: Path) -> None:
    record = train(
        compose_train(*TINY, "model=gpt", "model.target_params=60000", output_dir=tmp_path)
    )
    assert record["model"]["target_params"] == 60000
    assert record["target_params_error"] == pytest.approx(
        record["n_params_nonembedding"] / 60000 - 1
    )
    assert abs(record["target_params_error"]) < 0.1


def test_seed_zero_is_honoured_and_seeds_do_not_leak(tmp_path: Path) -> None:
    """Seed 0 twice gives one run; seed 1 another, through the initial weights alone (the data's
    order pinned) and through the data's order alone: code that ignored `seed` in either place, or
    leaked one job's into the next, would give equal curves or two different seed-0 runs."""
    runs = {
        "first": ["seed=0"],
        "weights": ["seed=1", "data.seed=0"],
        "order": ["seed=0", "data.seed=1"],
        "again": ["seed=0"],
    }
    records = {name: train(compose_train(*TINY, *overrides, output_dir=tmp_path / name))
               for name, overrides in runs.items()}  # fmt: skip
    assert [r["seed"] for r in records.values()] == [0, 1, 0, 0]
    curves = {
        name: [float(r["train/loss"]) for r in read_metrics(tmp_path / name)] for name in runs
    }
    assert curves["again"] == pytest.approx(curves["first"], abs=1e-6)
    assert records["again"]["val_loss"] == pytest.approx(records["first"]["val_loss"], abs=1e-6)
    for other in ("weights", "order"):  # every step differs, far beyond the 1e-6 above
        differences = [abs(x - y) for x, y in zip(curves[other], curves["first"], strict=True)]
        assert len(differences) == 6 and min(differences) > 1e-4, (other, differences)


def test_the_last_checkpoint_is_the_final_steps(tmp_path: Path) -> None:
    """last.ckpt holds the final step even when it falls between checkpoints (10 steps, every 3),
    with a checksum beside it and the previous one (step 9) kept."""
    drop = ("trainer.max_steps", "trainer.val_check_interval")
    overrides = [o for o in TINY if not o.startswith(drop)]
    train(compose_train(*overrides, "trainer.max_steps=10", "trainer.val_check_interval=3",
                        output_dir=tmp_path))  # fmt: skip
    checkpoints = tmp_path / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    previous = torch.load(checkpoints / "last.previous.ckpt", weights_only=True)
    assert (last["global_step"], previous["global_step"]) == (10, 9)
    assert {p.name for p in checkpoints.iterdir()} == {
        "last.ckpt", "last.ckpt.sha256", "last.previous.ckpt", "last.previous.ckpt.sha256"
    }  # fmt: skip
    sums = ["last.ckpt.sha256", "last.previous.ckpt.sha256"]  # in sha256sum's own format
    subprocess.run(["sha256sum", "--check", "--quiet", *sums], cwd=checkpoints, check=True)


def make_shard(path: Path, magic: int = 20240520, truncate: int = 0) -> Path:
    write_shard(path, torch.randint(0, 256, (50_000,)).numpy().astype("uint16"))
    if magic != 20240520:
        raw = bytearray(path.read_bytes())
        raw[:4] = magic.to_bytes(4, "little")
        path.write_bytes(bytes(raw))
    if truncate:
        path.write_bytes(path.read_bytes()[:-truncate])
    return path


BAD_INPUTS = {
    "heads": (["model.d_model=100", "model.n_heads=3"], "model.d_model=100 is not divisible"),
    "lr": (["optimizer.lr=0"], "optimizer.lr must be a positive number"),
    "batch": (["data.batch_size=-4"], "data.batch_size must be a positive number"),
    "steps": (["trainer.max_steps=0"], "trainer.max_steps must be a positive integer"),
    "budget": (["budget.tokens=-1e6"], "budget.tokens must be a positive number"),
    "tiny_budget": (["budget.flops=10"], "budget.flops=10 gives 0 steps"),
    "seq_len": (["model.max_seq_len=16"], "data.seq_len=32 exceeds model.max_seq_len=16"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_fails_before_training(name: str, tmp_path: Path) -> None:
    overrides, message = BAD_INPUTS[name]
    with pytest.raises(ConfigError, match=message):
        tiny = budgeted(TINY) if any(o.startswith("budget.") for o in overrides) else TINY
        train(compose_train(*tiny, *overrides, output_dir=tmp_path / "run"))
    assert not (tmp_path / "run" / "run.json").exists()


def test_bad_data_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "a.txt").write_text("x" * 2100)  # validation takes 2048 of it
    cases = {
        "missing": (["data=text", "data.path=/no/such/dir"], "/no/such/dir"),
        "empty": (["data=text", f"data.path={tmp_path / 'empty'}"], "empty"),
        "small": (["data=text", f"data.path={tmp_path / 'small'}"], "batch"),
        "magic": (["data=shards", f"data.path={make_shard(tmp_path / 'm.bin', magic=7)}"], "magic"),
        "truncated": (["data=shards", f"data.path={make_shard(tmp_path / 't.bin', truncate=10)}"], "t.bin"),
    }  # fmt: skip
    for name, (overrides, message) in cases.items():
        out = tmp_path / f"run_{name}"
        with pytest.raises(ConfigError, match=message):
            train(compose_train(*TINY_TRAINING, *overrides, "data.val_tokens=2048", output_dir=out))
        assert not (out / "run.json").exists(), name


@pytest.mark.parametrize(
    "args,message",
    [
        (["model.n_heads=3"], "model.d_model=64 is not divisible by model.n_heads=3"),
        (["optimizer.lrr=1"], "Could not override 'optimizer.lrr'"),
        (["model=gpt_nonexistent"], "Could not find 'model/gpt_nonexistent'"),
    ],
)
def test_cli_reports_bad_input_in_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_cli(*TINY, *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    eager = train(compose_train(*TINY, output_dir=tmp_path / "eager"))
    cache = f"paths.compile_cache_dir={tmp_path / 'compile_cache'}"
    compiled = train(compose_train(*TINY, "compile=true", cache, output_dir=tmp_path / "compiled"))
    assert compiled["status"] == "completed"
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-3)
    # The compilation is kept where the config says, for the sweep's next job of this shape.
    assert list((tmp_path / "compile_cache" / "inductor").rglob("*.py"))
    assert compiled["first_step_s"] > 0 and eager["first_step_s"] > 0


@pytest.mark.parametrize("devices", ["auto", "1", "2", "'2'"])
def test_devices_are_counted_once(devices: str, tmp_path: Path) -> None:
    """The planned tokens per step, the launchers' device count and Lightning's own agree (a
    quoted '2' is a string, which Lightning reads as 2)."""
    from scalinglab.launching.jobs import trainer_devices
    from scalinglab.planning import plan

    cfg = compose_train(*TINY, "trainer.accelerator=cpu", f"trainer.devices={devices}",
                        output_dir=tmp_path)  # fmt: skip
    trainer = pl.Trainer(accelerator="cpu", devices=cfg.trainer.devices, logger=False)
    assert trainer_devices(cfg) == trainer.world_size
    job = plan(cfg)
    assert job.tokens_per_step == 4 * 32 * trainer.world_size == 4 * 32 * job.world_size


def test_auto_and_minus_one_mean_every_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from scalinglab.budget import world_size

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert world_size("auto", 2, "gpu") == world_size(-1, 2, "gpu") == 8
    assert world_size("auto", 1, "cpu") == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="trainer.devices=-1 means every GPU"):
        world_size(-1, 1, "cpu")


def test_ckpt_path_starts_a_job_from_a_checkpoint(tmp_path: Path) -> None:
    first = train(compose_train(*TINY, "trainer.max_steps=3", output_dir=tmp_path / "first"))
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert first["steps"] == 3

    record = train(compose_train(*TINY, f"ckpt_path={checkpoint}", output_dir=tmp_path / "more"))
    assert record["status"] == "completed" and record["steps"] == 6
    assert [int(r["step"]) for r in read_metrics(tmp_path / "more")] == [4, 5, 6]

    missing = tmp_path / "none.ckpt"
    with pytest.raises(ConfigError, match=f"^ckpt_path={missing}: no such checkpoint$"):
        train(compose_train(*TINY, f"ckpt_path={missing}", output_dir=tmp_path / "missing"))

    # A checkpoint at or past this run's last step: recorded completed at 6 steps, it said before.
    past = tmp_path / "more" / "checkpoints" / "last.ckpt"
    fewer = compose_train(
        *TINY, "trainer.max_steps=3", f"ckpt_path={past}", output_dir=tmp_path / "x"
    )
    with pytest.raises(ConfigError, match=r"is at step 6, not before this run's last step 3 \("):
        train(fewer)
    assert not (tmp_path / "x" / "run.json").exists()


def test_a_job_completed_at_another_commit_is_named_and_rerun_on_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = git_state()[0]
    if now is None:
        pytest.skip("the code is not in a git repository: no commit to compare")
    short = TINY_TRAINING[:2]  # 6 steps of the tiny model
    first = train(compose_train(*TINY, *short, output_dir=tmp_path))
    assert first["git_commit"] == now
    then = "0" * 40  # the record of a run trained by other code
    (tmp_path / "run.json").write_text(json.dumps({**first, "git_commit": then}))

    with caplog.at_level(logging.INFO, logger="scalinglab"):
        skipped = train(compose_train(*TINY, output_dir=tmp_path))
    assert skipped["git_commit"] == then  # skipped, and said so
    assert f"completed at commit {then[:10]}, the code is now at {now[:10]}" in caplog.text
    assert "rerun_stale=true retrains it" in caplog.text

    rerun = train(compose_train(*TINY, "rerun_stale=true", output_dir=tmp_path))
    assert rerun["status"] == "completed" and rerun["git_commit"] == now
    assert rerun["attempts"] == 1 and rerun["steps"] == 6  # trained afresh, not resumed
    assert json.loads((tmp_path / f"run.json.{then[:10]}").read_text())["git_commit"] == then
    assert (tmp_path / f"checkpoints.{then[:10]}" / "last.ckpt").exists()
    # Completed at this commit: skipped, even with rerun_stale.
    again = train(compose_train(*TINY, "rerun_stale=true", output_dir=tmp_path))
    assert again["wall_time_s"] == rerun["wall_time_s"]
    # The sweep's closing lines name the jobs it skipped as stale: completed before the launch,
    # at another commit; not a job it trained while a commit was made (its record has the new one).
    rows = [{"job": "a", "status": "completed", "path": str(tmp_path)}]
    after, before = "2999-01-01T00:00:00+00:00", "2000-01-01T00:00:00+00:00"
    assert stale_jobs(rows, now, after) == [] and stale_jobs(rows, then, after) == ["a"]
    assert stale_jobs(rows, then, before) == []  # trained by this launch
    assert stale_jobs([{**rows[0], "status": "failed"}], then, after) == []


def test_progress_bar_settings() -> None:
    assert [shows_progress_bar(s, tty=True) for s in ("auto", "on", "off")] == [True, True, False]
    assert [shows_progress_bar(s, tty=False) for s in ("auto", "on", "off")] == [False, True, False]
    assert shows_progress_bar(False, tty=True) is False  # YAML's unquoted `off`
    with pytest.raises(ConfigError, match="progress_bar must be auto, on or off"):
        shows_progress_bar("rich", tty=True)


@pytest.mark.parametrize("setting", ["on", "auto"])
def test_progress_bar_is_tqdm_when_on_and_log_lines_off_a_terminal(
    setting: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Under pytest stdout is no terminal: auto shows plain log lines, on shows tqdm's bar."""
    train(
        compose_train(*TINY, "trainer.max_steps=3", f"progress_bar={setting}", output_dir=tmp_path)
    )
    out = capsys.readouterr().out
    assert ("Epoch 0: 100%" in out) == (setting == "on"), out[-2000:]


def test_how_to_run_and_tags_do_not_make_another_study(monkeypatch) -> None:
    """rerun_stale, progress_bar and W&B tags leave the sweep id (so the job directories) as is;
    an override of what is trained does not."""
    from scalinglab.ids import sweep_id_from_argv

    def sweep_id(*argv: str) -> str:
        monkeypatch.setattr(sys, "argv", ["scaling-train", "-m", "sweep=demo", *argv])
        return sweep_id_from_argv("demo")

    plain = sweep_id()
    labelled = sweep_id("rerun_stale=true", "progress_bar=off", "tags=[ladder]", "+tags=[x]")
    assert labelled == plain != sweep_id("optimizer.lr=0.001")
