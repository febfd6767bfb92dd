"""Injected faults: each one leaves no job lost and no record wrong (`pytest -m faults`).

A job is interrupted (SIGTERM), launched twice at once, resumed from a damaged checkpoint, runs out
of disk, finds garbage in its metrics.csv or a truncated run.json, or dies without a word; every
time, the relaunch ends where an uninterrupted run ends (the same final validation loss, each step
logged once) and no record claims what did not happen. The sweep-level cases (a SIGTERM to a
sweep, two launches of one sweep) start real processes and are `slow`.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from scalinglab.callbacks import VerifiedCheckpointIO, checksum_path, sha256_of
from scalinglab.errors import OutputError
from scalinglab.records import LOCK_FILE, job_lock, run_status
from scalinglab.sweeping import update_summary
from scalinglab.train import train
from tests.conftest import TINY, compose_train, run_cli

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
# Six steps, a checkpoint and a validation every two: a fault at step 5 finds last.ckpt at step 4
# and the one before it at step 2.
SIX = [*[o for o in TINY if not o.startswith("trainer.val_check_interval")],
       "trainer.val_check_interval=2"]  # fmt: skip


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs in fresh processes import this module for its callbacks."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def steps_logged(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run every fault's relaunch must end as."""
    return train(compose_train(*SIX, output_dir=tmp_path_factory.mktemp("straight")))


def relaunch(run_dir: Path, straight: dict[str, Any]) -> dict[str, Any]:
    """Launch the job again: it completes, each step logged once, with the uninterrupted run's
    final figures, and leaves no temporary file."""
    returned = train(compose_train(*SIX, output_dir=run_dir))
    final = record(run_dir)
    assert returned == final
    assert final["status"] == "completed", final
    assert steps_logged(run_dir) == [1, 2, 3, 4, 5, 6]
    assert final["steps"] == straight["steps"] and final["tokens"] == straight["tokens"]
    assert final["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-5)
    assert not list(run_dir.rglob("*.tmp")), "temporary files left behind"
    return final


class CrashAt(pl.Callback):
    """Kills training after a given step, as a crashed job would be."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


class SignalAt(pl.Callback):
    """Sends this process a signal after a given step, as SLURM's pre-emption or `kill` would."""

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def crash_at(step: int) -> list[str]:
    return [f"+callbacks.crash._target_={__name__}.CrashAt", f"+callbacks.crash.step={step}"]


def crashed_run(run_dir: Path, step: int = 5) -> None:
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_train(*SIX, *crash_at(step), output_dir=run_dir))


# ---- 1. SIGTERM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [3, 4], ids=["between-checkpoints", "at-a-checkpoint"])
def test_sigterm_checkpoints_records_interrupted_and_exits_143(
    tmp_path: Path, straight: dict[str, Any], step: int
) -> None:
    signal_at = [f"+callbacks.stop._target_={__name__}.SignalAt", f"+callbacks.stop.step={step}"]
    with pytest.raises(SystemExit) as stopped:
        train(compose_train(*SIX, *signal_at, output_dir=tmp_path))
    assert stopped.value.code == 143
    interrupted = record(tmp_path)
    assert interrupted["status"] == "interrupted" and "SIGTERM" in interrupted["error"]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == step  # saved at the signal, not at the last checkpoint
    assert steps_logged(tmp_path) == list(range(1, step + 1))

    resumed = relaunch(tmp_path, straight)
    assert resumed["attempts"] == 2


class SignalInValidation(pl.Callback):
    """Sends this process SIGTERM, or two of them, during the validation of a given step."""

    def __init__(self, step: int, count: int = 1):
        self.step, self.count = step, count

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and not trainer.sanity_checking and self.count:
            for _ in range(self.count):
                os.kill(os.getpid(), signal.SIGTERM)
            self.count = 0


def val_steps(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("val/loss")]


@pytest.mark.parametrize("count", [1, 2], ids=["one", "two"])
def test_sigterm_during_a_validation_records_it_before_stopping(
    tmp_path: Path, straight: dict[str, Any], count: int
) -> None:
    """Lightning stops a validation at a SIGTERM and its resume skips that step's validation: the
    row was lost for good. The validation now ends (its row written), then the job stops; a second
    SIGTERM changes nothing."""
    at = [f"+callbacks.stop._target_={__name__}.SignalInValidation", "+callbacks.stop.step=4",
          f"+callbacks.stop.count={count}"]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        train(compose_train(*SIX, *at, output_dir=tmp_path))
    assert stopped.value.code == 143
    assert record(tmp_path)["status"] == "interrupted"
    assert val_steps(tmp_path) == [2, 4]
    relaunch(tmp_path, straight)
    assert val_steps(tmp_path) == [2, 4, 6]


class CrashInValidation(pl.Callback):
    """Kills the job as a validation starts, as kill -9 or a crash there would."""

    def __init__(self, step: int):
        self.step = step

    def on_validation_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and not trainer.sanity_checking:
            raise RuntimeError(f"simulated crash in the validation of step {self.step}")


def test_a_job_killed_during_a_validation_validates_that_step_when_resumed(
    tmp_path: Path, straight: dict[str, Any]
) -> None:
    """The step's checkpoint was saved before its validation: the resume went on after the step
    and its validation row was lost for good (val at [2, 6]). It is saved once the validation
    has logged, so the resume trains the step again and validates it."""
    at = [f"+callbacks.crash._target_={__name__}.CrashInValidation", "+callbacks.crash.step=4"]
    with pytest.raises(RuntimeError, match="simulated crash in the validation"):
        train(compose_train(*SIX, *at, output_dir=tmp_path))
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    relaunch(tmp_path, straight)
    assert val_steps(tmp_path) == [2, 4, 6]


# A job in its own process (a SIGTERM that nothing handles kills it, and would kill pytest) with
# a SIGTERM sent at a point of the job given by the name of the scalinglab.job function it precedes.
SIGTERM_BEFORE = """
import os, signal, sys
from pathlib import Path
import scalinglab.job as job
from scalinglab.train import train
from tests.conftest import compose_train
from tests.test_faults import SIX

name, run_dir, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
original = getattr(job, name)
def signalled(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return original(*args, **kwargs)
setattr(job, name, signalled)
train(compose_train(*SIX, *overrides, output_dir=run_dir))
"""


def job_signalled_before(name: str, run_dir: Path, *overrides: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_BEFORE, name, str(run_dir), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode


def test_a_second_sigterm_while_the_record_is_written_exits_143(
    tmp_path: Path, straight: dict[str, Any]
) -> None:
    """The first SIGTERM stops the fit; a second, after Lightning's teardown restored the default
    action, killed the job (exit -15, not 143) while it closed W&B. It is logged now."""
    signal_at = [f"+callbacks.stop._target_={__name__}.SignalAt", "+callbacks.stop.step=3"]
    assert job_signalled_before("finish_wandb", tmp_path, *signal_at) == 143
    assert record(tmp_path)["status"] == "interrupted"
    relaunch(tmp_path, straight)


def test_a_sigterm_before_the_fit_exits_143(tmp_path: Path, straight: dict[str, Any]) -> None:
    assert job_signalled_before("prepared_data", tmp_path) == 143
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
    relaunch(tmp_path, straight)


class FailOnRank(pl.Callback):
    """Fails one rank of a multi-process job as its training ends."""

    def __init__(self, rank: int):
        self.rank = rank

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_rank == self.rank:
            raise RuntimeError(f"simulated failure of rank {self.rank}")


def test_a_failed_rank_fails_its_job(tmp_path: Path) -> None:
    """trainer.devices=2 on CPUs, Lightning starting rank 1: rank 1 failed as rank 0 finished,
    and the job exited 0, recorded completed."""
    done = run_cli(
        *SIX, "trainer.devices=2", "trainer.accelerator=cpu", "threads=1",
        f"+callbacks.fail._target_={__name__}.FailOnRank", "+callbacks.fail.rank=1",
        f"paths.output_dir={tmp_path / 'run'}", "sweep_id=test", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "rank 1 exited with 1: the job failed" in done.stderr
    failed = record(tmp_path / "run")
    assert failed["status"] == "failed" and "rank 1 exited with 1" in failed["error"]


@pytest.mark.slow
def test_sigterm_stops_a_sweep_with_its_summary_and_a_relaunch_finishes_it(tmp_path: Path) -> None:
    """kill -TERM of a sweep (its process group, as SLURM and a terminal do): the running job is
    checkpointed and `interrupted`, no further job launches, the summary is written, the exit
    code is 143; the same command again finishes every job, each once."""
    hold = [f"+callbacks.hold._target_={__name__}.HoldAt", "+callbacks.hold.step=10",
            "+callbacks.hold.seconds=60", "+callbacks.hold.once=true"]  # fmt: skip
    args = [
        "-m",
        *SIX,
        "trainer.max_steps=24",
        "seed=0,1,2",
        f"paths.output_root={tmp_path}",
        *hold,
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "scalinglab.train", *args], cwd=tmp_path,
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("sweeps/*/*/held")):  # the first job, at step 10
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGTERM)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 143, output[-3000:]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    (job,) = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert record(job)["seed"] == 0  # the others never launched
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [(r["job"], r["status"]) for r in summary] == [(job.name, "interrupted")]
    checkpoint = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 10  # the step the signal stopped it at

    again = run_cli(*args, cwd=tmp_path)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["completed"] * 3
    assert "from step 10 of" in again.stdout + again.stderr
    for job in (p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        assert steps_logged(job) == list(range(1, 25)), job.name
        assert record(job)["attempts"] == (2 if record(job)["seed"] == 0 else 1)


class HoldAt(pl.Callback):
    """Marks the job's directory (`held`) and waits after a given step, so that a test can act
    while it trains; with `once`, only the first job of the sweep to get there waits (a relaunch,
    the same command, does not)."""

    def __init__(self, step: int, seconds: float, once: bool = False):
        self.step, self.seconds, self.once = step, seconds, once

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        with (Path(trainer.default_root_dir) / "trained_by").open("a") as f:
            f.write(f"{os.getpid()}\n")  # one line per process that trains the job

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        job = Path(trainer.default_root_dir)
        if trainer.global_step == self.step:
            if self.once and list(job.parent.glob("*/held")):
                return
            (job / "held").touch()
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline and not trainer.received_sigterm:
                time.sleep(0.05)


# ---- 2. two launches at once -----------------------------------------------------------------------


def test_a_job_held_by_another_process_is_skipped(
    tmp_path: Path, straight: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    holder = subprocess.Popen(  # another launch of the same job, training it (its lock only)
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)",
         str(tmp_path / LOCK_FILE)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with caplog.at_level(logging.INFO, logger="scalinglab"):
            skipped = train(compose_train(*SIX, output_dir=tmp_path))
        assert skipped["status"] == "running"
        assert "held by another process" in caplog.text and str(tmp_path) in caplog.text
        assert not (tmp_path / "run.json").exists() and not (tmp_path / "metrics.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    relaunch(tmp_path, straight)  # once the holder is gone, the job runs


@pytest.mark.slow
def test_two_launches_of_a_sweep_train_each_job_once(tmp_path: Path) -> None:
    args = ["-m", *SIX, "seed=0,1", f"paths.output_root={tmp_path}",
            f"+callbacks.hold._target_={__name__}.HoldAt", "+callbacks.hold.step=3",
            "+callbacks.hold.seconds=4"]  # fmt: skip
    command = [sys.executable, "-m", "scalinglab.train", *args]
    launches = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for _ in range(2)]  # fmt: skip
    outputs = [launch.communicate(timeout=300)[0] for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], outputs
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(jobs) == 2
    for job in jobs:
        final = record(job)
        assert final["status"] == "completed" and final["attempts"] == 1, job.name
        assert len((job / "trained_by").read_text().split()) == 1, job.name  # one process
        assert steps_logged(job) == [1, 2, 3, 4, 5, 6]
    said = "".join(outputs)
    assert "held by another process" in said  # the second launch says why it skipped


# ---- 3. damaged checkpoints ------------------------------------------------------------------------


def overwrite_inside(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 4096] = os.urandom(4096)
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


@pytest.mark.parametrize(
    "damage,falls_back_to",
    [
        ({"last.ckpt": overwrite_inside}, 2),
        ({"last.ckpt": truncate}, 2),
        ({"last.ckpt": truncate, "last.previous.ckpt": overwrite_inside}, 0),
    ],
    ids=["overwritten", "truncated", "both-damaged"],
)
def test_a_damaged_checkpoint_is_set_aside_and_the_previous_one_used(
    tmp_path: Path,
    straight: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    damage: dict[str, Any],
    falls_back_to: int,
) -> None:
    crashed_run(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    for name, how in damage.items():
        how(checkpoints / name)
    with caplog.at_level(logging.INFO, logger="scalinglab"):
        relaunch(tmp_path, straight)
    for name in damage:  # named in the log and kept aside, never loaded
        assert f"{checkpoints / name} is damaged" in caplog.text
        assert (checkpoints / f"{name}.damaged").exists()
    if falls_back_to:
        assert f"from step {falls_back_to} of {checkpoints / 'last.previous.ckpt'}" in caplog.text
    else:
        assert "resuming" not in caplog.text  # from scratch
    for name in ("last.ckpt", "last.previous.ckpt"):  # the new ones verify
        assert checksum_path(checkpoints / name).read_text().split()[0] == sha256_of(
            checkpoints / name
        )


@pytest.mark.faults
def test_a_killed_writes_partial_files_are_removed_when_the_job_starts_again(
    tmp_path: Path, straight: dict[str, Any]
) -> None:
    """kill -9 mid-write runs no cleanup: what it left (write_atomic's `.NAME.8HEX.tmp`, up to a
    checkpoint's size) is removed by the next start, which holds the job's lock."""
    crashed_run(tmp_path)
    partial = [
        tmp_path / "checkpoints" / ".last.ckpt.0a1b2c3d.tmp",
        tmp_path / ".run.json.deadbeef.tmp",
        tmp_path / ".metrics.csv.12345678.tmp",
    ]
    for path in partial:
        path.write_bytes(b"\0" * 4096)
    relaunch(tmp_path, straight)  # which asserts that no *.tmp is left


# ---- 4. a full disk --------------------------------------------------------------------------------


def disk_full() -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def disk_full_in_torch() -> None:
    """As torch's zip writer reports a full disk: a RuntimeError raised while handling it."""
    try:
        disk_full()
    except OSError:
        # As torch does: the OSError is only the RuntimeError's context.
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 3029632")  # noqa: B904


@pytest.mark.parametrize("fill", [disk_full, disk_full_in_torch], ids=["oserror", "torch"])
def test_a_full_disk_fails_the_job_and_keeps_the_previous_checkpoint(
    tmp_path: Path, straight: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fill: Any
) -> None:
    """A full disk is one line naming the file, in the record too (a real 3 MB tmpfs gave a
    70-line traceback and "unexpected pos 2996800"); the previous checkpoint is kept."""
    real_save, saves = torch.save, []

    def save_until_the_disk_fills(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        saves.append(1)
        if len(saves) == 2:  # the checkpoint of step 4: half written, then the disk is full
            f.write(b"\0" * 1000)
            fill()
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    with pytest.raises(OutputError, match="^no space left on"):
        train(compose_train(*SIX, output_dir=tmp_path))
    monkeypatch.undo()
    failed = record(tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert failed["status"] == "failed"
    assert f"no space left on {last}" in failed["error"]
    assert torch.load(last, weights_only=True)["global_step"] == 2  # the previous one, intact
    assert checksum_path(last).read_text().split()[0] == sha256_of(last)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.tmp"))
    relaunch(tmp_path, straight)


def read_only(path: Path) -> OSError:
    return OSError(errno.EROFS, "Read-only file system", str(path))


def test_a_read_only_directory_skips_a_completed_run_and_refuses_another(
    tmp_path: Path, straight: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only output directory (tracebacks before): its completed run is skipped, as it
    would be anyway; an unfinished one is refused in one line naming the directory."""
    done, other = tmp_path / "done", tmp_path / "other"
    train(compose_train(*SIX, output_dir=done))

    def no_lock(output_dir: Path) -> Any:
        raise read_only(Path(output_dir) / LOCK_FILE)

    monkeypatch.setattr("scalinglab.job.holding", no_lock)
    assert train(compose_train(*SIX, output_dir=done)) == record(done)
    other.mkdir()
    with pytest.raises(OutputError, match=f"^cannot write to {other}: the job cannot run there"):
        train(compose_train(*SIX, output_dir=other))


def test_records_are_written_with_the_umask(tmp_path: Path) -> None:
    """Others on a shared disk read the records: not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        train(compose_train(*SIX, "trainer.max_steps=3", output_dir=tmp_path))
    finally:
        os.umask(old)
    for path in (
        tmp_path / "run.json",
        tmp_path / "metrics.csv",
        tmp_path / "checkpoints" / "last.ckpt",
    ):
        assert path.stat().st_mode & 0o777 == 0o644, path


# ---- 5. garbage in metrics.csv ---------------------------------------------------------------------


def test_garbage_rows_in_metrics_are_dropped_on_resume(
    tmp_path: Path, straight: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    crashed_run(tmp_path)
    metrics = tmp_path / "metrics.csv"
    lines = metrics.read_text().splitlines()
    lines.insert(3, "3,garbage,\x00\x01,,")  # a torn or stray line among the rows
    lines.append("7,1,2")
    metrics.write_text("\n".join(lines) + "\n")
    assert len(lines) == 8  # a header, steps 1 to 5 (the crash's step is on disk too), 2 bad
    with caplog.at_level(logging.INFO, logger="scalinglab"):
        relaunch(tmp_path, straight)
    assert "dropped unparsable rows: line 4 '3,garbage," in caplog.text
    assert "line 8 '7,1,2'" in caplog.text
    assert "dropped rows past step 4 (steps 5)" in caplog.text  # resumed from step 4


# ---- 6. a truncated run.json -----------------------------------------------------------------------


def test_a_truncated_record_of_a_completed_job_is_rebuilt(
    tmp_path: Path, straight: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    train(compose_train(*SIX, output_dir=tmp_path))
    run_json = tmp_path / "run.json"
    run_json.write_text(run_json.read_text()[:100])
    assert run_status(tmp_path) == "damaged"
    with caplog.at_level(logging.INFO, logger="scalinglab"):
        relaunch(tmp_path, straight)
    assert f"{run_json}:" in caplog.text and "state is unknown" in caplog.text
    assert "from step 6" in caplog.text  # its final checkpoint: nothing retrained
    assert (tmp_path / "run.json.damaged").exists()


# ---- 7. a job whose process is gone ----------------------------------------------------------------


def test_a_running_record_without_its_process_is_lost(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    job = sweep_dir / "job0"
    crashed_run(job)
    # What a SIGKILL leaves: a record that still says `running`.
    stale = {**record(job), "status": "running"}
    (job / "run.json").write_text(json.dumps(stale))
    assert run_status(job) == "lost"
    rows = update_summary(sweep_dir)
    assert [(r["job"], r["status"]) for r in rows] == [("job0", "lost")]
    lock = job_lock(job)
    with lock:  # a live process holds it: truly running
        assert run_status(job) == "running"
        assert [r["status"] for r in update_summary(sweep_dir)] == ["running"]


# ---- 8. checkpoints are loaded as data ------------------------------------------------------------


def test_a_resume_loads_its_checkpoint_with_weights_only(
    tmp_path: Path,
    straight: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every torch.load of a resumed job (the resume point's step, Lightning's restore) passes
    weights_only=True, and Lightning never says it defaulted weights_only to False."""
    real_load, asked = torch.load, []

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    lightning = logging.getLogger("pytorch_lightning")  # its records do not reach the root's
    lightning.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            crashed_run(tmp_path)
            monkeypatch.setattr(torch, "load", recording_load)
            relaunch(tmp_path, straight)
    finally:
        lightning.removeHandler(caplog.handler)
    assert len(asked) >= 2 and set(asked) == {True}, asked
    assert "resuming" in caplog.text  # Lightning's own load happened among them
    assert "`weights_only` was not set" not in caplog.text


class OpensAFile:
    """Creates a file when unpickled: what a hostile checkpoint would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("asked", [None, False])
def test_the_checkpoint_reader_refuses_pickled_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked: bool | None
) -> None:
    """VerifiedCheckpointIO, which Lightning restores through, loads weights only whatever it is
    asked, even where torch's own default is told to unpickle anything."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker, hostile = tmp_path / "payload_ran", tmp_path / "last.ckpt"
    torch.save({"global_step": 3, "state_dict": {}, "payload": OpensAFile(marker)}, hostile)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        VerifiedCheckpointIO().load_checkpoint(hostile, weights_only=asked)
    assert not marker.exists()
