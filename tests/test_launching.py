"""Launchers end to end on the CPU: a local pool of processes, DDP ranks started from outside, a real
one-node SLURM cluster, a local Ray cluster and a real two-node one (one node lost mid-sweep), and
the SLURM and Ray resource checks.

Each job's process records who ran it (JobProbe: pid, rank, SLURM job id, times) in its directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from scalinglab.errors import ConfigError
from scalinglab.launching.local_gpus import LocalGPUsLauncher
from scalinglab.launching.ray_cluster import NODE_ID_ENV, RayLauncher
from scalinglab.train import CONFIG_DIR
from tests.conftest import TINY, compose_train, run_cli
from tests.test_faults import SIX, HoldAt, steps_logged

ROOT = Path(__file__).resolve().parents[1]
# `launcher=NAME` once conf/train.yaml lists the group in its defaults, `+launcher=NAME` until then.
TRAIN_DEFAULTS = OmegaConf.load(ROOT / "conf" / "train.yaml").defaults
LAUNCHER = (
    "launcher"
    if any("launcher" in d for d in TRAIN_DEFAULTS if OmegaConf.is_dict(d))
    else "+launcher"
)
PROBE = [f"+hydra.callbacks.probe._target_={__name__}.JobProbe"]
CPU_SLOTS = "hydra.launcher.gpus=[cpu,cpu]"


class JobProbe(Callback):
    """Writes probe-RANK.json in the job's directory, from the process that ran the job.

    `hold_s` stretches each job, so that jobs meant to run at once overlap whatever their start-up.
    """

    def __init__(self, hold_s: float = 0.0):
        self.hold_s = hold_s

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        self.write(config, end=None)  # a job that never ends is seen too
        time.sleep(self.hold_s)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self.write(config, end=time.time())

    def write(self, config: DictConfig, end: float | None) -> None:
        env = os.environ
        rank = env.get("RANK") or env.get("SLURM_PROCID") or "0"
        probe = {"pid": os.getpid(), "start": self.started, "end": end}
        for key in ("RANK", "WORLD_SIZE", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_PROCID",
                    NODE_ID_ENV, "SCALINGLAB_TEST_FORWARDED"):  # fmt: skip
            probe[key] = env.get(key)
        path = Path(config.hydra.runtime.output_dir, f"probe-{rank}.json")
        path.with_suffix(".tmp").write_text(json.dumps(probe))
        path.with_suffix(".tmp").replace(path)  # whole, for a test that reads it while jobs run


class CrashOnSeed(pl.Callback):
    """Fails the job whose seed is `seed`, after a few steps."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 2 and int(os.environ["PL_GLOBAL_SEED"]) == self.seed:
            raise RuntimeError(f"simulated crash of seed {self.seed}")


class HoldAtStep(pl.Callback):
    """Holds each job at step 2 for `seconds`: mid-training, its run.json written, when a test
    kills it."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 2:
            time.sleep(self.seconds)


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs in fresh processes (and on SLURM) import this module for the probe."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def sweep(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[Path]]:
    """`scaling-train -m TINY PROBE ARGS` under tmp_path; (the process, its job directories)."""
    result = run_cli(
        "-m", *TINY, *PROBE, f"paths.output_root={tmp_path / 'out'}", *args, cwd=tmp_path
    )
    sweeps = list((tmp_path / "out" / "sweeps").glob("*"))
    jobs = sorted(
        p for s in sweeps for p in s.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    return result, jobs


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def max_in_flight(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


# ---- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in Path(CONFIG_DIR, "launcher").glob("*.yaml"))
)
def test_launcher_options_compose(name: str) -> None:
    if name == "slurm":
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"{LAUNCHER}={name}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.startswith(
        ("hydra_plugins.", "hydra._internal.core_plugins")
    )


def test_slots_group_devices_and_share_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = LocalGPUsLauncher(gpus=[0, 1, 2, 3], jobs_per_gpu=2, devices_per_job=2)
    assert pool.slots() == ["0,1", "2,3", "0,1", "2,3"]
    assert LocalGPUsLauncher(gpus=["cpu", "cpu"]).slots() == ["", ""]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # children must name the parent's devices
    assert LocalGPUsLauncher(jobs_per_gpu=3).slots() == ["3", "5"] * 3


# ---- local_gpus -----------------------------------------------------------------------------------


@pytest.mark.faults  # an injected crash or signal: CI's faults step
def test_pool_runs_each_job_in_its_own_process_and_records_a_failure(tmp_path: Path) -> None:
    crash = [f"+callbacks.crash._target_={__name__}.CrashOnSeed", "+callbacks.crash.seed=2"]
    hold = "+hydra.callbacks.probe.hold_s=3"
    result, jobs = sweep(
        tmp_path, f"{LAUNCHER}=local_gpus", CPU_SLOTS, "seed=0,1,2,3", hold, *crash
    )
    assert result.returncode != 0  # the failure is the sweep's exit status...
    assert "simulated crash of seed 2" in result.stderr
    records = {read(j / "run.json")["seed"]: read(j / "run.json") for j in jobs}
    statuses = {seed: r["status"] for seed, r in records.items()}
    assert statuses == {
        0: "completed",
        1: "completed",
        2: "failed",
        3: "completed",
    }  # ...after all ran
    assert len({r["sweep_id"] for r in records.values()} | {jobs[0].parent.name}) == 1

    probes = [read(j / "probe-0.json") for j in jobs]
    assert len({p["pid"] for p in probes}) == 4  # four fresh processes
    assert all(p["CUDA_VISIBLE_DEVICES"] == "" for p in probes)
    assert max_in_flight([(p["start"], p["end"]) for p in probes]) == 2  # two slots, both used
    assert (result.stdout + result.stderr).count("Launching 4 jobs") == 1


class ExitOnSeed(pl.Callback):
    """Kills the process of the job whose seed is `seed` mid-training, as the kernel's OOM killer
    would: no exception, no result."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 2 and int(os.environ["PL_GLOBAL_SEED"]) == self.seed:
            os._exit(9)


@pytest.mark.faults  # an injected crash or signal: CI's faults step
def test_pool_reusing_processes_runs_a_slots_jobs_in_one_process(tmp_path: Path) -> None:
    """reuse_processes: each slot's process runs its jobs in turn; a job that fails leaves its
    worker running, a worker that dies takes only its own job with it."""
    crash = [f"+callbacks.crash._target_={__name__}.CrashOnSeed", "+callbacks.crash.seed=1"]
    kill = [f"+callbacks.kill._target_={__name__}.ExitOnSeed", "+callbacks.kill.seed=3"]
    result, jobs = sweep(
        tmp_path,
        f"{LAUNCHER}=local_gpus",
        CPU_SLOTS,
        "hydra.launcher.reuse_processes=true",
        "seed=0,1,2,3,4,5",
        "+hydra.callbacks.probe.hold_s=2",  # jobs of both slots overlap whatever their start-up
        *crash,
        *kill,
    )
    assert result.returncode != 0
    records = {read(j / "run.json")["seed"]: read(j / "run.json") for j in jobs}
    statuses = {seed: r["status"] for seed, r in records.items()}
    assert statuses == {0: "completed", 1: "failed", 2: "completed", 3: "failed"} | {
        4: "completed",
        5: "completed",
    }
    assert "worker died" in records[3]["error"]
    probes = {read(j / "run.json")["seed"]: read(j / "probe-0.json") for j in jobs}
    pids = {p["pid"] for p in probes.values()}
    assert 2 <= len(pids) <= 3  # two workers, and one that replaced the killed one
    ended = [(p["start"], p["end"]) for p in probes.values() if p["end"] is not None]
    assert max_in_flight(ended) == 2  # the killed job never ended


@pytest.mark.engines
def test_ddp_job_ranks_are_started_from_outside(tmp_path: Path) -> None:
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "+trainer.strategy=ddp"]
    result, jobs = sweep(tmp_path, f"{LAUNCHER}=local_gpus", CPU_SLOTS, *ddp, "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("Launching") == 1  # the sweep ran once
    assert len(jobs) == 2
    for job in jobs:
        record = read(job / "run.json")
        assert record["status"] == "completed" and record["attempts"] == 1  # rank 0's only
        assert record["tokens_per_step"] == 2 * 4 * 32  # both ranks' batches
        ranks = [read(job / f"probe-{rank}.json") for rank in (0, 1)]
        assert {r["WORLD_SIZE"] for r in ranks} == {"2"} and ranks[0]["pid"] != ranks[1]["pid"]


def test_jobs_across_nodes_are_refused_off_slurm(tmp_path: Path) -> None:
    result, jobs = sweep(
        tmp_path, f"{LAUNCHER}=local_gpus", CPU_SLOTS, "trainer.num_nodes=2", "seed=0,1"
    )
    assert result.returncode != 0
    assert (
        "trainer.num_nodes=2 in job #0: this launcher runs each job on one machine" in result.stderr
    )
    assert not [job for job in jobs if (job / "run.json").exists()]


# ---- a signal to local_gpus's launcher ---------------------------------------------------------


def session_processes(session: int) -> list[int]:
    """The live processes of a session: a launcher started with start_new_session leads one,
    and its jobs and pool workers stay in it, whatever their process groups."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_name = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        state, session_id = after_name[0], int(after_name[3])
        if session_id == session and state not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# Three jobs of 24 steps, one at a time on one CPU slot; the first holds at step 10 (HoldAt: until
# its SIGTERM, or 60 s) so that the test signals the launcher while it trains.
HELD_SWEEP = [*SIX, "trainer.max_steps=24", "seed=0,1,2", f"{LAUNCHER}=local_gpus",
              "hydra.launcher.gpus=[cpu]", f"+callbacks.hold._target_={HoldAt.__module__}.HoldAt",
              "+callbacks.hold.step=10", "+callbacks.hold.seconds=60",
              "+callbacks.hold.once=true"]  # fmt: skip


def held_sweep(tmp_path: Path, reuse: bool) -> tuple[subprocess.Popen, list[str], Path]:
    """The launcher of HELD_SWEEP, its own session's leader (nothing but this test signals it);
    (the launcher, its arguments, the job it holds) once the first job holds."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("reads processes from /proc")
    args = ["-m", *HELD_SWEEP, f"hydra.launcher.reuse_processes={str(reuse).lower()}",
            f"paths.output_root={tmp_path}"]  # fmt: skip
    log = (tmp_path / "launcher.log").open("w")  # a file: a pipe nobody reads could fill up
    launcher = subprocess.Popen(
        [sys.executable, "-m", "scalinglab.train", *args], cwd=tmp_path, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    held = lambda: list(tmp_path.glob("sweeps/*/*/held"))  # noqa: E731
    if not wait_until(lambda: held() or launcher.poll() is not None, 300) or not held():
        launcher.kill()
        pytest.fail(f"no job held: {(tmp_path / 'launcher.log').read_text()[-3000:]}")
    return launcher, args, held()[0].parent


def job_pid(job: Path) -> int:
    (pid,) = (int(line) for line in (job / "trained_by").read_text().split())
    return pid


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize(
    "signum,reuse",
    [(signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGINT, True)],
    ids=["sigterm-fresh-processes", "sigterm-reused-processes", "sigint-reused-processes"],
)
def test_a_signal_to_the_launcher_stops_its_jobs_and_a_relaunch_finishes(
    tmp_path: Path, signum: int, reuse: bool
) -> None:
    """`kill -TERM LAUNCHER_PID` (the launcher alone, not its process group): the running job gets
    the signal, checkpoints and is `interrupted`; no further job starts; the summary is written;
    the launcher exits 143 leaving no process behind; the same command again finishes the sweep.
    A SIGINT (a terminal's Ctrl-C) reaches the job as SIGTERM, so it checkpoints alike; exit 130."""
    launcher, args, job = held_sweep(tmp_path, reuse)
    pid = job_pid(job)
    assert pid != launcher.pid and alive(pid)
    os.kill(launcher.pid, signum)
    try:
        launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    output = (tmp_path / "launcher.log").read_text()
    assert launcher.returncode == 128 + signum, output[-3000:]
    assert not alive(pid)  # the job's process (a pool worker with reuse) is gone...
    assert wait_until(lambda: not session_processes(launcher.pid), 10), (  # ...and every other
        session_processes(launcher.pid)
    )
    assert read(job / "run.json")["status"] == "interrupted"
    checkpoint = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 10  # the step the signal stopped it at
    sweep_dir = job.parent
    launched = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert launched == [job]  # the other jobs never started
    summary = read(sweep_dir / "summary.json")
    assert [(r["job"], r["status"]) for r in summary] == [(job.name, "interrupted")]

    again = run_cli(*args, cwd=tmp_path)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    summary = read(sweep_dir / "summary.json")
    assert [r["status"] for r in summary] == ["completed"] * 3
    for each in (p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        assert steps_logged(each) == list(range(1, 25)), each.name
        assert read(each / "run.json")["attempts"] == (2 if each == job else 1)


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("reuse", [False, True], ids=["fresh-processes", "reused-processes"])
def test_a_job_stops_when_its_launcher_is_killed_outright(tmp_path: Path, reuse: bool) -> None:
    """SIGKILL of the launcher forwards nothing: the job's process (a pool worker with reuse)
    notices its parent gone within seconds, checkpoints, records itself `interrupted` and ends."""
    launcher, _, job = held_sweep(tmp_path, reuse)
    pid = job_pid(job)
    try:
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=10)
        assert wait_until(lambda: not alive(pid), 15), f"job {pid} still runs"
        assert wait_until(lambda: not session_processes(launcher.pid), 5), session_processes(
            launcher.pid
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)  # whatever is left of the launcher's group
        for left in session_processes(launcher.pid):
            os.kill(left, signal.SIGKILL)
    assert read(job / "run.json")["status"] == "interrupted"
    checkpoint = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 10


# ---- SLURM ----------------------------------------------------------------------------------------


def slurm_answers() -> bool:
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    up = ("idle", "mixed", "allocated", "completing")  # "idle*" (not responding) is not up
    return states.returncode == 0 and any(s.split("+")[0] in up for s in states.stdout.split())


@pytest.fixture(scope="module")
def slurm_cluster() -> Any:
    """A SLURM cluster that takes jobs: the one running here, or one started by .ci/slurm-up.sh and
    stopped afterwards, by the process ids the script printed, unless others' jobs are still on it."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra")
    if shutil.which("sbatch") is None:
        pytest.skip("no SLURM here (sbatch not found); .ci/slurm-up.sh sets up a one-node cluster")
    started: list[int] = []
    if not slurm_answers():
        if os.geteuid() != 0 or shutil.which("slurmctld") is None:
            pytest.skip("SLURM does not answer, and this user cannot start slurmctld")
        up = subprocess.run(
            [ROOT / ".ci" / "slurm-up.sh"], capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, up.stdout + up.stderr
        started = [
            int(line.split()[2]) for line in up.stdout.splitlines() if line.startswith("started ")
        ]
    yield
    if (
        started
        and not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip()
    ):
        for pid in reversed(started):  # slurmd, slurmctld, munged
            os.kill(pid, signal.SIGTERM)


SLURM_CPU = [f"{LAUNCHER}=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
             "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]  # fmt: skip


@pytest.mark.engines
def test_sweep_on_slurm(slurm_cluster: None, tmp_path: Path) -> None:
    result, jobs = sweep(tmp_path, *SLURM_CPU, "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(jobs) == 2
    assert {read(j / "run.json")["status"] for j in jobs} == {"completed"}
    assert {read(j / "run.json")["sweep_id"] for j in jobs} == {jobs[0].parent.name}
    slurm_job_ids = {read(j / "probe-0.json")["SLURM_JOB_ID"] for j in jobs}
    assert None not in slurm_job_ids and len(slurm_job_ids) == 2  # two SLURM jobs (an array)
    assert list(jobs[0].parent.glob(".submitit/*/*_result.pkl"))


@pytest.mark.engines
def test_ddp_job_on_slurm_gets_a_task_per_device(slurm_cluster: None, tmp_path: Path) -> None:
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "+trainer.strategy=ddp"]
    result, jobs = sweep(tmp_path, *SLURM_CPU, *ddp, "seed=0")
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = jobs
    assert read(job / "run.json")["status"] == "completed"
    ranks = [read(job / f"probe-{rank}.json") for rank in (0, 1)]
    assert [r["SLURM_PROCID"] for r in ranks] == ["0", "1"]
    assert (
        ranks[0]["SLURM_JOB_ID"] == ranks[1]["SLURM_JOB_ID"] and ranks[0]["pid"] != ranks[1]["pid"]
    )


def slurm_state(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    ).stdout


@pytest.mark.engines
def test_preempted_slurm_job_is_requeued_by_submitit_and_resumes(
    slurm_cluster: None, tmp_path: Path
) -> None:
    long = [
        "trainer.max_steps=3000",
        "trainer.val_check_interval=100",
        "trainer.log_every_n_steps=100",
    ]
    args = [*TINY, f"paths.output_root={tmp_path / 'out'}", *SLURM_CPU, *long]
    command = [sys.executable, "-m", "scalinglab.train", "-m", *args]
    log = tmp_path / "launcher.log"  # a file: a pipe nobody reads while we wait could fill up
    launcher = subprocess.Popen(
        command, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    job_id = None
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob("out/sweeps/*/*/checkpoints/last.ckpt")):
            assert launcher.poll() is None and time.time() < deadline, "no checkpoint in time"
            time.sleep(0.2)
        job_id = next(tmp_path.glob("out/sweeps/*/.submitit/*/*_submitted.pkl")).parent.name
        # SLURM's warning before it pre-empts a job: submitit requeues it (Lightning must not).
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        while "PENDING" not in slurm_state(job_id):
            assert time.time() < deadline, "the job was not requeued"
            time.sleep(0.2)
        # A requeued job waits two minutes before it is eligible again; no need here.
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"], check=True)
        launcher.wait(timeout=240)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            if job_id:
                subprocess.run(["scancel", job_id])
    assert launcher.returncode == 0, log.read_text()[-3000:]
    (record_file,) = tmp_path.glob("out/sweeps/*/*/run.json")
    record = read(record_file)
    assert record["status"] == "completed" and record["steps"] == 3000 and record["attempts"] == 2
    assert (
        "from step" in (record_file.parent / "train.log").read_text()
    )  # "resuming ... from step N"


SLURM_CONTRADICTIONS = {
    "tasks": (["trainer.devices=2"], {"tasks_per_node": 1}, "hydra.launcher.tasks_per_node=1 != trainer.devices=2"),
    "gpus": (["trainer=gpu", "trainer.devices=4"], {"tasks_per_node": 4, "gpus_per_node": 2}, "hydra.launcher.gpus_per_node=2 < trainer.devices=4"),
    "no_gpus": (["trainer=gpu"], {"gpus_per_node": 0}, "trainer.accelerator=gpu with hydra.launcher.gpus_per_node=0"),
    "nodes": (["trainer.num_nodes=2"], {"nodes": 1}, "hydra.launcher.nodes=1 != trainer.num_nodes=2"),
}  # fmt: skip


@pytest.mark.parametrize("case", SLURM_CONTRADICTIONS)
def test_slurm_check_names_contradictory_keys(case: str, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from scalinglab.launching.slurm import resource_conflicts

    overrides, params, message = SLURM_CONTRADICTIONS[case]
    job = compose_train(*overrides, output_dir=tmp_path)
    request = {"tasks_per_node": 1, "gpus_per_node": 1, "nodes": 1, **params}
    assert resource_conflicts(request, job) == [message]
    agreeing = {
        "tasks_per_node": job.trainer.devices,
        "gpus_per_node": 8,
        "nodes": job.trainer.num_nodes,
    }
    assert resource_conflicts(agreeing, job) == []


def test_slurm_refuses_contradictions_before_submitting(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    # The second job wants 2 devices; the launcher asks SLURM for 1 task per node.
    result, jobs = sweep(
        tmp_path, *SLURM_CPU, "hydra.launcher.tasks_per_node=1", "trainer.devices=1,2"
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "slurm launcher:" in line]
    assert len(lines) == 1 and "hydra.launcher.tasks_per_node=1 != trainer.devices=2" in lines[0]
    assert "nothing was submitted" in lines[0] and "Traceback" not in result.stderr
    assert jobs == [] and not list(tmp_path.glob("out/sweeps/*/.submitit"))


# ---- Ray ------------------------------------------------------------------------------------------


@pytest.mark.engines
def test_sweep_on_a_local_ray_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster: no token in ~/.ray
    result, jobs = sweep(tmp_path, f"{LAUNCHER}=ray", "hydra.launcher.gpus_per_job=0", "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(jobs) == 2
    assert {read(j / "run.json")["status"] for j in jobs} == {"completed"}
    assert {read(j / "run.json")["sweep_id"] for j in jobs} == {jobs[0].parent.name}
    assert len({read(j / "probe-0.json")["pid"] for j in jobs}) == 2


def test_ray_jobs_that_fit_no_node_are_refused_or_announced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two nodes of 1 GPU: a 2-GPU job fits the cluster's total, not any one node.
    nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]
    RayLauncher(gpus_per_job=1).check_a_node_fits(nodes)
    message = "cpus_per_job=1, gpus_per_job=2 fit no Ray node (nodes of 8 CPUs and 1 GPUs)"
    with pytest.raises(ConfigError, match=re.escape(message)):  # a local cluster never grows
        RayLauncher(gpus_per_job=2).check_a_node_fits(nodes)
    with caplog.at_level(logging.WARNING):  # an autoscaler may add a node that fits
        RayLauncher(address="auto", gpus_per_job=2).check_a_node_fits(nodes)
    assert message in caplog.text and "wait until such a node joins" in caplog.text


@pytest.fixture
def ray_cluster_of_two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Ray head and a worker node on this machine, one CPU each (ray.cluster_utils.Cluster: each
    node its own raylet and object store), so that two one-CPU jobs at once must take one each.

    Started here, after the autouse fixtures, so that jobs inherit their environment (a job's process
    sees its node's, not the sweep's); stopped by handle even when the test fails (never `ray stop`,
    which would stop other users' Ray too).
    """
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # throwaway nodes: no token in ~/.ray
    # A short directory of our own: Ray's socket paths must fit in 107 bytes, and the address file it
    # keeps there must not send others' `ray.init()` (or address=auto) to these nodes.
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1, include_dashboard=False)
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def ray_on(address: str) -> list[str]:
    return [f"{LAUNCHER}=ray", f"hydra.launcher.address={address}",
            "hydra.launcher.gpus_per_job=0"]  # fmt: skip


@pytest.mark.engines
def test_sweep_on_a_ray_cluster_of_two_nodes(ray_cluster_of_two_nodes: Any, tmp_path: Path) -> None:
    cluster = ray_cluster_of_two_nodes
    # Jobs see their node's environment; a variable of the sweep's reaches them through Ray.
    forward = "+hydra.launcher.init.runtime_env.env_vars.SCALINGLAB_TEST_FORWARDED=yes"
    # `auto`, as a user on a node of the cluster: the head's address, from the file under RAY_TMPDIR.
    result, jobs = sweep(tmp_path, *ray_on("auto"), forward, "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(jobs) == 2
    assert {read(j / "run.json")["status"] for j in jobs} == {"completed"}
    summary = read(jobs[0].parent / "summary.json")
    assert [(row["job"], row["status"]) for row in summary] == [(j.name, "completed") for j in jobs]

    nodes = {node.node_id for node in cluster.list_all_nodes()}
    ran_on = [read(j / "probe-0.json")[NODE_ID_ENV] for j in jobs]
    assert len(nodes) == 2 and set(ran_on) == nodes  # one job on each node
    assert [read(j / "run.json")["ray_node_id"] for j in jobs] == ran_on
    log = result.stdout + result.stderr
    assert all(f"completed on node {node}" in log for node in ran_on)  # the sweep's log says where
    assert {read(j / "probe-0.json")["SCALINGLAB_TEST_FORWARDED"] for j in jobs} == {"yes"}


def running(pid: int) -> bool:
    import psutil  # a dependency of ray

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.engines
def test_a_lost_ray_node_fails_its_job_and_the_others_complete(
    ray_cluster_of_two_nodes: Any, tmp_path: Path
) -> None:
    """The worker node's raylet dies while a job runs there: that job fails, its process does not
    outlive the node, and the other jobs (one still waiting for a CPU) complete on the head."""
    cluster = ray_cluster_of_two_nodes
    (worker,) = cluster.worker_nodes
    hold = [f"+callbacks.hold._target_={__name__}.HoldAtStep", "+callbacks.hold.seconds=3"]
    args = [*TINY, *PROBE, f"paths.output_root={tmp_path / 'out'}", *ray_on(cluster.address), *hold]
    command = [sys.executable, "-m", "scalinglab.train", "-m", *args, "seed=0,1,2"]
    log = tmp_path / "launcher.log"  # a file: a pipe nobody reads while we wait could fill up
    launcher = subprocess.Popen(
        command, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        # Ray's worker start-up takes minutes on 2 busy cores (120 s ran out once in CI's run).
        deadline = time.time() + 360
        while not (lost := [p for p in tmp_path.glob("out/sweeps/*/*/probe-0.json")
                            if read(p)[NODE_ID_ENV] == worker.node_id
                            and (p.parent / "run.json").exists()]):  # fmt: skip
            assert launcher.poll() is None and time.time() < deadline, "no job on the worker node"
            time.sleep(0.1)
        worker.kill_raylet()
        launcher.wait(timeout=180)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    output = log.read_text()
    assert launcher.returncode != 0, output[-3000:]
    failures = [line for line in output.splitlines() if " failed on Ray: " in line]
    assert len(failures) == 1 and worker.node_id in failures[0], output[-3000:]  # Ray names it

    lost_job = lost[0].parent
    assert not running(read(lost[0])["pid"])
    assert read(lost_job / "run.json")["status"] == "failed"  # the launcher's record of it
    others = sorted(
        p
        for p in lost_job.parent.iterdir()
        if p.is_dir() and p != lost_job and not p.name.startswith(".")
    )
    assert len(others) == 2
    assert {read(j / "run.json")["status"] for j in others} == {"completed"}
    assert {read(j / "probe-0.json")[NODE_ID_ENV] for j in others} == {cluster.head_node.node_id}
    summary = {row["job"]: row for row in read(lost_job.parent / "summary.json")}
    assert {job: row["status"] for job, row in summary.items()} == {
        lost_job.name: "failed",
        **{j.name: "completed" for j in others},
    }
    assert "NodeDiedError" in summary[lost_job.name]["error"]
