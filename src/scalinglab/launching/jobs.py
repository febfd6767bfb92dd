"""One job of a sweep in a fresh process: `python -m scalinglab.launching.jobs SPEC RESULT`.

The launcher composes each job's config as Hydra's basic launcher does (`load_sweep_config`: same
overrides, job number and output directory, and the sweep's resolver cache, so `sweep_id` is the
launcher's although the job's sys.argv differs), pickles it to SPEC and starts this module, under
torchrun when the job has several devices. The worker runs Hydra's `run_job` and writes the
JobReturn to RESULT (rank 0), so the sweeper sees each job's status and return value as if it had
run in-process, and raises the first failure after every job has ended.

A signal to the launcher alone (`kill -TERM PID`, not its process group) reaches its jobs through
`Forwarding`: each job's process leads a process group of its own, which the launcher signals; and
a job's process whose launcher died outright (SIGKILL: nothing forwarded) stops itself
(`stop_with_parent`), so that no job trains on as an orphan.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.callbacks import Callbacks
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from scalinglab.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class JobSpec:
    number: int  # hydra.job.num
    overrides: list[str]
    config: DictConfig  # the job's composed config, resolver cache included
    # Hydra's singletons (config store, version base...) without the resolvers, which plain pickle
    # cannot hold: the worker registers Hydra's again and the app's by importing the task's module.
    singletons: dict[type, Any]
    task: tuple[str, str]  # (module, qualified name) of the task function
    cwd: str  # relative sweep directories are relative to the launcher's working directory


def job_specs(
    config: DictConfig,
    hydra_context: HydraContext,
    task_function: Callable[[DictConfig], Any],
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobSpec]:
    task = task_reference(task_function)
    singletons = Singleton.get_state()["instances"]
    specs = []
    for number, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        job_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(job_config):
            job_config.hydra.job.id = number
            job_config.hydra.job.num = number
        specs.append(JobSpec(number, list(overrides), job_config, singletons, task, os.getcwd()))
    return specs


class SpecLauncher(Launcher):
    """What scalinglab's launchers share: Hydra's setup, then every job composed into a JobSpec."""

    devices_per_job: int = 1
    config: DictConfig | None = None
    hydra_context: HydraContext | None = None
    task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def job_specs(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, announce: str = ""
    ) -> list[JobSpec]:
        """Hydra's globals and logging set up, the sweep directory made, `announce` logged, each
        job composed as the basic launcher would, and its devices checked against the launcher's."""
        assert self.config and self.hydra_context and self.task_function
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if announce:
            log.info(announce)
        specs = job_specs(
            self.config, self.hydra_context, self.task_function, job_overrides, initial_job_idx
        )
        check_devices(specs, self.devices_per_job)
        return specs


def trainer_devices(job: DictConfig) -> int:
    """The processes the job's trainer starts on each node (budget.world_size of one node)."""
    from scalinglab.budget import world_size

    trainer = job.trainer
    return world_size(trainer.get("devices", 1), 1, trainer.get("accelerator", "auto"))


def check_devices(specs: Sequence[JobSpec], devices_per_job: int) -> None:
    """Refuse, before anything starts, a job whose trainer wants another number of processes."""
    for spec in specs:
        devices = trainer_devices(spec.config)
        if devices != devices_per_job:
            raise ConfigError(
                f"hydra.launcher.devices_per_job={devices_per_job} != trainer.devices={devices} "
                f"in job #{spec.number} ({' '.join(filter_overrides(spec.overrides))}): "
                "each device needs a process of its own"
            )
        nodes = spec.config.trainer.get("num_nodes", 1)
        if nodes != 1:  # torchrun here starts one node's ranks; SLURM starts several nodes'
            raise ConfigError(
                f"trainer.num_nodes={nodes} in job #{spec.number}: this launcher runs each job on "
                "one machine; use launcher=slurm for jobs across nodes"
            )


def task_reference(task_function: Callable) -> tuple[str, str]:
    """Where the worker imports the task function from (importing it registers the app's resolvers)."""
    module = task_function.__module__
    if module == "__main__":  # `python -m app`: the worker imports the module under its own name
        spec = sys.modules["__main__"].__spec__
        if spec is None:
            raise CompactHydraException(
                "this launcher runs jobs in fresh processes: start the app as a module "
                "(python -m ...) or an installed command, not as a script path"
            )
        module = spec.name
    return module, task_function.__qualname__


def import_task(module: str, qualname: str) -> Callable[[DictConfig], Any]:
    task: Any = importlib.import_module(module)
    for name in qualname.split("."):
        task = getattr(task, name)
    return inspect.unwrap(task)  # @hydra.main's wrapper -> the task function it wraps


def failed(spec: JobSpec, error: BaseException) -> JobReturn:
    ret = JobReturn(overrides=spec.overrides, status=JobStatus.FAILED)
    ret.return_value = error
    return ret


def lost(spec: JobSpec, error: BaseException) -> JobReturn:
    """A job whose process died before it could report (killed, its node lost), recorded as the
    process would have: its run.json failed, and a failed row in the sweep's summary."""
    from scalinglab.records import record_lost
    from scalinglab.sweeping import update_summary

    sweep_dir = Path(spec.cwd, str(spec.config.hydra.sweep.dir))
    job_dir = sweep_dir / str(spec.config.hydra.sweep.subdir)
    message = f"{type(error).__name__}: {error}"
    record_lost(job_dir, message)
    update_summary(sweep_dir, job_dir, message)
    return failed(spec, error)


def interrupted(spec: JobSpec, how: str) -> JobReturn:
    """A job a signal stopped: it recorded itself `interrupted` if it got that far, and resumes
    when the sweep is launched again."""
    return failed(spec, RuntimeError(f"job #{spec.number} was interrupted ({how}): resumable"))


# Exit codes of a job that a signal stopped (128 + SIGTERM or SIGINT, as RunRecord exits).
SIGNAL_EXITS = {128 + signal.SIGTERM, 128 + signal.SIGINT}


class Forwarding:
    """The launcher's SIGTERM and SIGINT handler: SIGTERM goes on to the process group of each
    running job (its own process, a pool worker, or torchrun, which passes it to its ranks), and
    no job starts after it. The launcher then waits for its jobs, which checkpoint and exit.

    A SIGINT goes on as SIGTERM too: Lightning acts on SIGTERM between steps, where the state is
    whole and Checkpoints saves it, while a KeyboardInterrupt lands anywhere and saves nothing.

    A job's process starts under `starting`, so that a signal arriving meanwhile reaches it too.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._groups: set[int] = set()
        # Reentrant: the handler runs in the main thread, and a second signal may interrupt it.
        self._lock = threading.RLock()

    def __call__(self, signum: int, frame: Any) -> None:
        with self._lock:
            first = self.signum is None
            self.signum = signum
            groups = sorted(self._groups)
        if first:
            log.warning(
                f"{signal.Signals(signum).name}: SIGTERM to {len(groups)} running job(s); "
                "waiting for them to checkpoint, launching no further job"
            )
        for group in groups:
            signal_group(group, signal.SIGTERM)

    @contextmanager
    def starting(self) -> Iterator[bool]:
        """Held while a job's process starts; yields whether it may start (no signal yet)."""
        with self._lock:
            yield self.signum is None

    def add(self, group: int) -> None:
        with self._lock:
            self._groups.add(group)

    def discard(self, group: int) -> None:
        with self._lock:
            self._groups.discard(group)


def signal_group(pid: int, signum: int) -> None:
    """Signal the process group `pid` leads, or the process alone if it leads none yet (a pool
    worker that has not run its initializer); a process already gone is no error."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with suppress(ProcessLookupError):
            os.kill(pid, signum)


def run_in_process(
    spec: JobSpec,
    devices: int,
    env: dict[str, str],
    worker: ProcessPoolExecutor | None = None,
    forwarding: Forwarding | None = None,
) -> JobReturn:
    """Run one job in a fresh process (torchrun's ranks when devices > 1), or in `worker`, a
    one-process pool kept for the slot's jobs (a single-device job); never raises. With
    `forwarding`, the process leads its own process group, signalled by the launcher's handler
    (a terminal's Ctrl-C then reaches the launcher alone, which passes it on once)."""
    own_group = forwarding is not None
    forwarding = forwarding or Forwarding()
    with tempfile.TemporaryDirectory(prefix="scalinglab-job-") as tmp:
        spec_file, result_file = Path(tmp, "spec.pkl"), Path(tmp, "result.pkl")
        spec_file.write_bytes(pickle.dumps(spec))
        if worker is not None:
            return run_in_worker(spec, worker, env, spec_file, result_file, forwarding)
        command = ["-m", "scalinglab.launching.jobs", str(spec_file), str(result_file)]
        if devices > 1:  # torchrun sets RANK, WORLD_SIZE and MASTER_*; Lightning takes them up
            torchrun = [
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={devices}",
            ]
            command = [*torchrun, *command]
            # Inside a SLURM allocation Lightning would take SLURM's task count over torchrun's.
            env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
        try:
            with forwarding.starting() as may_start:
                if not may_start:
                    return interrupted(spec, "never started")
                process = subprocess.Popen(
                    [sys.executable, *command],
                    env=env,
                    cwd=spec.cwd,
                    process_group=0 if own_group else None,
                )
                forwarding.add(process.pid)
            try:
                code = process.wait()
            finally:
                forwarding.discard(process.pid)
            ret = pickle.loads(result_file.read_bytes()) if result_file.exists() else None
        except Exception as err:  # the launcher records it and goes on with the other jobs
            return failed(spec, err)
    if ret is None and (code in SIGNAL_EXITS or forwarding.signum is not None):
        return interrupted(spec, f"exit code {code}")
    if ret is None or (code != 0 and ret.status == JobStatus.COMPLETED):
        problem = "before reporting a result" if ret is None else "(a rank other than 0 failed)"
        error = RuntimeError(f"job #{spec.number} exited with code {code} {problem}")
        return lost(spec, error) if ret is None else failed(spec, error)
    return ret


def run_in_worker(
    spec: JobSpec,
    worker: ProcessPoolExecutor,
    env: dict[str, str],
    spec_file: Path,
    result_file: Path,
    forwarding: Forwarding,
) -> JobReturn:
    with forwarding.starting() as may_start:
        if not may_start:
            return interrupted(spec, "never started")
        future = worker.submit(run_here, str(spec_file), str(result_file), env)
        pids = list(worker._processes)  # type: ignore[attr-defined]  # started by submit
        for pid in pids:
            forwarding.add(pid)
    try:
        future.result()
    except SystemExit as stop:  # a signal stopped the job, which recorded itself `interrupted`
        return interrupted(spec, f"exit code {stop.code}")
    except BrokenProcessPool as err:
        if forwarding.signum is not None:  # killed by the signal before its job could handle it
            return interrupted(spec, "its worker ended")
        return lost(spec, RuntimeError(f"job #{spec.number}'s worker died: {err!r}"))
    except Exception as err:  # the worker died (killed, out of memory): a lost job
        return lost(spec, RuntimeError(f"job #{spec.number}'s worker died: {err!r}"))
    finally:
        for pid in pids:
            forwarding.discard(pid)
    ret = pickle.loads(result_file.read_bytes()) if result_file.exists() else None
    if ret is None:
        return lost(spec, RuntimeError(f"job #{spec.number} reported no result"))
    return ret


def stop_with_parent(interval_s: float = 1.0) -> None:
    """Send this process SIGTERM once the process that started it has died (a job then
    checkpoints and records itself `interrupted`; an idle process just ends): a launcher killed
    outright forwards no signal. A thread polls the parent's pid: PR_SET_PDEATHSIG would fire
    when the launcher's *thread* that started this process ends, not the launcher."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        log.warning(f"the launcher (pid {parent}) is gone: stopping this job")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


_launcher_pid: int | None = None  # a pool worker's parent when it started


def start_worker() -> None:
    """A pool worker's initializer: a process group of its own (its launcher signals it), and
    stopped when its launcher dies."""
    global _launcher_pid
    _launcher_pid = os.getppid()
    os.setpgid(0, 0)
    stop_with_parent()


def run_here(spec_file: str, result_file: str, env: dict[str, str]) -> int:
    """`main` in a worker process that a launcher keeps for several jobs, with the slot's
    environment (set again for each job: a job may change its own)."""
    os.environ.update(env)
    try:
        return main(spec_file, result_file)
    finally:
        if _launcher_pid is not None and os.getppid() != _launcher_pid:
            os._exit(128 + signal.SIGTERM)  # orphaned: nobody to report to, nothing more to run


def main(spec_file: str, result_file: str) -> int:
    # Hydra's plugin scan re-executes plugin modules, redefining their config classes: scan before
    # unpickling, so that the job's config refers to the classes that stay.
    Plugins.instance()
    spec: JobSpec = pickle.loads(Path(spec_file).read_bytes())
    Singleton._instances.update(spec.singletons)
    setup_globals()
    task_function = import_task(*spec.task)
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:  # rank 0 saves .hydra/ and reports
        with open_dict(spec.config):
            spec.config.hydra.output_subdir = None
    ret = run_job(
        task_function=task_function,
        config=spec.config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
        hydra_context=HydraContext(config_loader=None, callbacks=Callbacks(spec.config)),  # type: ignore[arg-type]
    )
    if ret.status == JobStatus.FAILED:  # the traceback stays here, in the job's log
        error = ret._return_value
        log.error(
            f"job failed: {error}",
            exc_info=None if isinstance(error, CompactHydraException) else error,
        )
    if rank == 0:
        try:
            result = pickle.dumps(ret)
            pickle.loads(result)
        except Exception:  # an exception that does not survive pickling travels as its message
            ret.return_value = RuntimeError(
                f"{type(ret._return_value).__name__}: {ret._return_value}"
            )
            result = pickle.dumps(ret)
        Path(result_file).write_bytes(result)
    return 0 if ret.status == JobStatus.COMPLETED else 1


if __name__ == "__main__":
    stop_with_parent()
    sys.exit(main(*sys.argv[1:]))
