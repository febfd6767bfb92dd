"""A sweep on a Ray cluster: one Ray task per job, holding the job's CPUs and GPUs.

Inside its task a job runs in a fresh process, as with local_gpus (Ray sets CUDA_VISIBLE_DEVICES to
the task's GPUs; torchrun starts the ranks of a multi-device job). Outputs go where the launcher's
working directory says, so on a multi-node cluster the sweep directory must be on a shared disk, and
every node needs the same environment (scalinglab installed at the same path): a job's process sees
the environment of the `ray start` that started its node, not the sweep command's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from scalinglab.errors import ConfigError
from scalinglab.launching.jobs import JobSpec, SpecLauncher, lost, run_in_process

log = logging.getLogger(__name__)

# Where a job runs, in its process's environment: the Ray node's id (as `ray list nodes` names it)
# and IP, so that the job, and anything it records, can say which machine trained it.
NODE_ID_ENV, NODE_IP_ENV = "SCALINGLAB_RAY_NODE_ID", "SCALINGLAB_RAY_NODE_IP"


def run_task(spec: JobSpec, devices: int) -> tuple[str, JobReturn]:
    """The job in a fresh process on this task's node; (the node, the job's return)."""
    import ray

    node_id, ip = ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
    env = {**os.environ, NODE_ID_ENV: node_id, NODE_IP_ENV: ip}
    return f"{node_id} ({ip})", run_in_process(spec, devices, env)


class RayLauncher(SpecLauncher):
    """Runs a sweep's jobs as Ray tasks of `cpus_per_job` CPUs and `gpus_per_job` GPUs.

    `address`: a running cluster (`auto`, `HOST:6379`, `ray://HOST:10001`); null starts a local one
    for this sweep, with `init`'s keyword arguments to ray.init, and stops it afterwards.
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

    def check_a_node_fits(self, nodes: list[dict[str, float]]) -> None:
        """A job's task runs on one node: refuse (local) or warn (a cluster, which an autoscaler
        may grow) when no node has its CPUs and GPUs, where Ray would hold the jobs silently."""
        need = {"CPU": self.cpus_per_job, "GPU": self.gpus_per_job}
        if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
            return
        shapes = sorted({(node.get("CPU", 0), node.get("GPU", 0)) for node in nodes})
        problem = (
            f"hydra.launcher.cpus_per_job={self.cpus_per_job:g}, gpus_per_job="
            f"{self.gpus_per_job:g} fit no Ray node (nodes of "
            + ", ".join(f"{cpus:g} CPUs and {gpus:g} GPUs" for cpus, gpus in shapes)
            + ")"
        )
        if self.address is None:  # this sweep's own cluster never grows: it would wait forever
            raise ConfigError(f"{problem}; gpus_per_job=0 trains on CPUs")
        log.warning(f"{problem}: the jobs wait until such a node joins the cluster")

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import ray

        specs = self.job_specs(job_overrides, initial_job_idx)
        started = not ray.is_initialized()
        if started:
            # "local", not None: ray.init(address=None) joins whatever cluster /tmp/ray last recorded.
            ray.init(address=self.address or "local", **self.init)
        try:
            nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
            log.info(
                f"Launching {len(specs)} jobs on Ray: {len(nodes)} nodes, {ray.cluster_resources()}"
            )
            self.check_a_node_fits(nodes)
            task = ray.remote(run_task).options(
                num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job, max_retries=0
            )
            pending = {task.remote(spec, self.devices_per_job): spec for spec in specs}
            returns: dict[int, JobReturn] = {}
            while pending:  # in the order jobs end, so that the log says when each did
                [ref], _ = ray.wait(list(pending), num_returns=1)
                spec = pending.pop(ref)
                try:
                    node, ret = ray.get(ref)
                except Exception as err:  # a lost worker or node: recorded, the others go on
                    log.error(f"#{spec.number} failed on Ray: {err}")
                    returns[spec.number] = lost(spec, err)
                else:
                    log.info(f"#{spec.number} {ret.status.name.lower()} on node {node}")
                    returns[spec.number] = ret
            return [returns[spec.number] for spec in specs]
        finally:
            if started:
                ray.shutdown()
