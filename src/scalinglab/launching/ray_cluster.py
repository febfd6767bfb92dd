"""A sweep on a Ray cluster: one Ray task per job, holding the job's CPUs and GPUs.

Inside its task a job runs in a fresh process, as with local_gpus (Ray sets CUDA_VISIBLE_DEVICES to
the task's GPUs; torchrun starts the ranks of a multi-device job). Outputs go where the launcher's
working directory says, so on a multi-node cluster the sweep directory must be on a shared disk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from scalinglab.errors import ConfigError
from scalinglab.launching.jobs import JobSpec, SpecLauncher, failed, run_in_process

log = logging.getLogger(__name__)


def run_task(spec: JobSpec, devices: int) -> JobReturn:
    return run_in_process(spec, devices, dict(os.environ))


class RayLauncher(SpecLauncher):
    """Runs a sweep's jobs as Ray tasks of `cpus_per_job` CPUs and `gpus_per_job` GPUs.

    `address`: a running cluster (`auto`, `ray://host:10001`); null starts a local one for this
    sweep, with `init`'s keyword arguments to ray.init, and stops it afterwards.
    """

    def __init__(
        self,
        address: str | None = None,
        init: dict[str, Any] | None = None,
        cpus_per_job: float = 1,
        gpus_per_job: float = 0,
        devices_per_job: int = 1,
    ) -> None:
        self.address = address
        self.init = OmegaConf.to_container(init) if OmegaConf.is_config(init) else dict(init or {})
        self.cpus_per_job, self.gpus_per_job = cpus_per_job, gpus_per_job
        self.devices_per_job = devices_per_job

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import ray

        specs = self.job_specs(job_overrides, initial_job_idx)
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, **self.init)
        try:
            gpus = ray.cluster_resources().get("GPU", 0)
            if self.gpus_per_job > gpus and self.address is None:  # it would wait forever
                raise ConfigError(
                    f"hydra.launcher.gpus_per_job={self.gpus_per_job} but the local Ray cluster "
                    f"has {gpus:g} GPUs (gpus_per_job=0 trains on CPUs)"
                )
            log.info(f"Launching {len(specs)} jobs on Ray ({ray.cluster_resources()})")
            task = ray.remote(run_task).options(
                num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job, max_retries=0
            )
            refs = [task.remote(spec, self.devices_per_job) for spec in specs]
            returns = []
            for spec, ref in zip(specs, refs, strict=True):
                try:
                    returns.append(ray.get(ref))
                except Exception as err:  # a lost worker or node: recorded, the others go on
                    returns.append(failed(spec, err))
            return returns
        finally:
            if started:
                ray.shutdown()
