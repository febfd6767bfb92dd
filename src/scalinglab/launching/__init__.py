"""Launchers for sweeps: `launcher=local_gpus|slurm|ray` (conf/launcher/).

- `local_gpus.LocalGPUsLauncher`: a pool over this machine's GPUs (or CPU slots), one fresh process
  per job with its own CUDA_VISIBLE_DEVICES.
- `slurm.SlurmLauncher`: Hydra's submitit SLURM launcher, refusing contradictory resources before
  anything is submitted.
- `ray_cluster.RayLauncher`: one Ray task per job, holding the job's CPUs and GPUs.

Every job runs in a process of its own, started the same way (`jobs.run_in_process`); a job with
several devices has its DDP ranks started from outside (torchrun, or SLURM tasks), so Lightning never
re-executes the sweep's command line. Hydra instantiates launchers only from the `hydra_plugins`
namespace: `hydra_plugins.scalinglab.launchers` gives these classes the names configs target.
"""
