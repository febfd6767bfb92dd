"""A pool over this machine's GPUs: each job in a fresh process with its own CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hydra.core.utils import JobReturn

from scalinglab.errors import ConfigError
from scalinglab.launching.jobs import JobSpec, SpecLauncher, run_in_process

log = logging.getLogger(__name__)

CPU = "cpu"  # a `gpus` entry for a slot with no GPU: tests and CPU-only machines


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
    visible); `cpu` entries are slots without a GPU (CUDA_VISIBLE_DEVICES="").
    """

    def __init__(
        self,
        gpus: Sequence[int | str] | None = None,
        jobs_per_gpu: int = 1,
        devices_per_job: int = 1,
    ) -> None:
        self.gpus = None if gpus is None else [str(g) for g in gpus]
        self.jobs_per_gpu = jobs_per_gpu
        self.devices_per_job = devices_per_job

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
        free: queue.SimpleQueue[str] = queue.SimpleQueue()
        for slot in slots:
            free.put(slot)
        # Several processes per CPU slot would otherwise each start a thread per core.
        threads = max(1, (os.cpu_count() or 1) // (len(slots) * self.devices_per_job))

        def run(spec: JobSpec) -> JobReturn:
            slot = free.get()
            env: dict[str, Any] = {"OMP_NUM_THREADS": str(threads), **os.environ}
            env["CUDA_VISIBLE_DEVICES"] = slot
            log.info(f"#{spec.number} starts on CUDA_VISIBLE_DEVICES={slot!r}")
            try:
                return run_in_process(spec, self.devices_per_job, env)
            finally:
                free.put(slot)

        with ThreadPoolExecutor(max_workers=len(slots)) as pool:
            return list(pool.map(run, specs))
