"""Hydra's submitit SLURM launcher, refusing contradictory resources before anything is submitted.

SLURM starts the DDP ranks (one task per device; Lightning's SLURMEnvironment takes them up), and
submitit owns requeueing (a pre-empted or timed-out job resubmits itself and resumes from
checkpoints/last.ckpt), so Lightning's own auto-requeue is off: conf/launcher/slurm.yaml.

The check is in the launcher rather than an `on_multirun_start` callback because it needs every
job's own config (a sweep over trainer.devices has jobs that disagree with the master config), and
because choosing the launcher then always brings its check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import DictConfig

from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from scalinglab.errors import ConfigError
from scalinglab.launching.jobs import trainer_devices

GPU_ACCELERATORS = ("gpu", "cuda")


def resource_conflicts(params: Mapping[str, Any], job: DictConfig) -> list[str]:
    """What in the launcher's SLURM request contradicts the job's trainer (empty: nothing)."""
    trainer = job.trainer
    devices = trainer_devices(job)
    tasks, gpus, nodes = params["tasks_per_node"], params.get("gpus_per_node"), params["nodes"]
    num_nodes = trainer.get("num_nodes", 1)
    gpu_trainer = str(trainer.get("accelerator")) in GPU_ACCELERATORS
    problems = []
    if tasks != devices:
        problems.append(f"hydra.launcher.tasks_per_node={tasks} != trainer.devices={devices}")
    if gpu_trainer and not gpus:
        problems.append(
            f"trainer.accelerator={trainer.accelerator} with hydra.launcher.gpus_per_node={gpus}"
        )
    elif gpu_trainer and gpus < devices:
        problems.append(f"hydra.launcher.gpus_per_node={gpus} < trainer.devices={devices}")
    if nodes != num_nodes:
        problems.append(f"hydra.launcher.nodes={nodes} != trainer.num_nodes={num_nodes}")
    return problems


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """submitit's SLURM launcher (hydra-submitit-launcher); see conf/hydra/launcher/slurm.yaml."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        loader = self.hydra_context.config_loader
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            problems = resource_conflicts(
                self.params, loader.load_sweep_config(self.config, list(overrides))
            )
            if problems:
                raise ConfigError(
                    f"slurm launcher: {'; '.join(problems)} in job #{number} "
                    f"({' '.join(filter_overrides(overrides))}); nothing was submitted"
                )
        return super().launch(job_overrides, initial_job_idx)
