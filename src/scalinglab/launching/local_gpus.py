"""A pool over this machine's GPUs: each job in a fresh process with its own CUDA_VISIBLE_DEVICES.

SIGTERM or SIGINT to the launcher (its pid alone, as `kill` sends it) stops the sweep as SIGTERM to
an in-process sweep does: each running job gets it, checkpoints and is recorded `interrupted`, no
further job starts, the summary is written, and the launcher exits 128 + the signal; the same
command again finishes the sweep.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn

from scalinglab.errors import ConfigError
from scalinglab.launching.jobs import (
    Forwarding,
    JobSpec,
    SpecLauncher,
    run_in_process,
    start_worker,
)

log = logging.getLogger(__name__)

CPU = "cpu"  # a `gpus` entry for a slot with no GPU: tests and CPU-only machines


@contextmanager
def forwarding_signals() -> Iterator[Forwarding]:
    """SIGTERM and SIGINT handled by a `Forwarding` while the jobs run (Python can set handlers in
    the main thread only; a SIGINT ignored, as in a shell's background job, stays ignored)."""
    forwarding = Forwarding()
    signums = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signums.append(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread():
        signums = []
    previous = {signum: signal.signal(signum, forwarding) for signum in signums}
    try:
        yield forwarding
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def visible_gpus() -> list[str]:
    """This process's GPUs, as the ids its children's CUDA_VISIBLE_DEVICES must name."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


class LocalGPUsLauncher(SpecLauncher):
    """Runs a sweep's jobs on this machine's GPUs, `jobs_per_gpu` at a time on each.

    A job takes `devices_per_job` GPUs (torchrun starts one rank per device); at most
    len(gpus) // devices_per_job * jobs_per_gpu jobs run at once. `gpus` lists device ids (null: all
    visible); `cpu` entries are slots without a GPU (CUDA_VISIBLE_DEVICES=""). reuse_processes:
    each slot keeps one process for its single-device jobs instead of starting one per job.
    """

    def __init__(
        self,
        gpus: Sequence[int | str] | None = None,
        jobs_per_gpu: int = 1,
        devices_per_job: int = 1,
        reuse_processes: bool = False,
    ) -> None:
        self.gpus = None if gpus is None else [str(g) for g in gpus]
        self.jobs_per_gpu = jobs_per_gpu
        self.devices_per_job = devices_per_job
        self.reuse_processes = reuse_processes

    def slots(self) -> list[str]:
        """CUDA_VISIBLE_DEVICES of each slot: devices_per_job GPUs, each group jobs_per_gpu times."""
        gpus = visible_gpus() if self.gpus is None else self.gpus
        k = self.devices_per_job
        if k < 1 or self.jobs_per_gpu < 1 or len(gpus) < k:
            raise ConfigError(
                f"hydra.launcher.devices_per_job={k}, jobs_per_gpu={self.jobs_per_gpu} do not fit "
                f"hydra.launcher.gpus={gpus} (set gpus=[cpu,...] for CPU slots)"
            )
        groups = [gpus[i : i + k] for i in range(0, len(gpus) - k + 1, k)]
        return [",".join(g for g in group if g != CPU) for group in groups] * self.jobs_per_gpu

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        slots = self.slots()
        specs = self.job_specs(
            job_overrides,
            initial_job_idx,
            announce=f"Launching {len(job_overrides)} jobs locally, {len(slots)} at a time",
        )
        free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(slots)):
            free.put(index)
        # Several processes per CPU slot would otherwise each start a thread per core.
        threads = max(1, (os.cpu_count() or 1) // (len(slots) * self.devices_per_job))
        # One process per slot running its jobs one after another saves each job the start-up
        # (4-8 s of imports on 2 CPU cores: much of a small model's job); torchrun's ranks need
        # fresh processes. A worker that dies takes only its job with it: the next one replaces it.
        reuse = self.reuse_processes and self.devices_per_job == 1
        spawn = multiprocessing.get_context("spawn")
        workers: dict[int, ProcessPoolExecutor] = {}

        def run(spec: JobSpec) -> JobReturn:
            index = free.get()
            slot = slots[index]
            env: dict[str, Any] = {"OMP_NUM_THREADS": str(threads), **os.environ}
            env["CUDA_VISIBLE_DEVICES"] = slot
            log.info(f"#{spec.number} starts on CUDA_VISIBLE_DEVICES={slot!r}")
            worker = None
            if reuse:
                if index not in workers or workers[index]._broken:
                    workers[index] = ProcessPoolExecutor(
                        1, mp_context=spawn, initializer=start_worker
                    )
                worker = workers[index]
            try:
                return run_in_process(spec, self.devices_per_job, env, worker, forwarding)
            finally:
                free.put(index)

        with forwarding_signals() as forwarding:
            try:
                with ThreadPoolExecutor(max_workers=len(slots)) as pool:
                    returns = list(pool.map(run, specs))
            finally:
                for worker in workers.values():
                    worker.shutdown()
        if forwarding.signum is not None:
            self.stopped(forwarding.signum)
        return returns

    def stopped(self, signum: int) -> None:
        """After a signal: the summary as the jobs left it, then the exit a process killed by
        the signal would have (SIGTERM 143, SIGINT 130)."""
        from scalinglab.sweeping import update_summary

        assert self.config is not None
        rows = update_summary(Path(str(self.config.hydra.sweep.dir)))
        statuses = ", ".join(f"{r['job']} {r['status']}" for r in rows)
        log.warning(f"{signal.Signals(signum).name}: sweep stopped ({statuses}); launch it again")
        raise SystemExit(128 + signum)
