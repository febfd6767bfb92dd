"""scalinglab's launchers under names Hydra accepts: it instantiates launchers only from classes
defined in `hydra_plugins` modules. The code is in scalinglab.launching."""

from scalinglab.launching import local_gpus, ray_cluster


class LocalGPUsLauncher(local_gpus.LocalGPUsLauncher):
    __doc__ = local_gpus.LocalGPUsLauncher.__doc__


class RayLauncher(ray_cluster.RayLauncher):
    __doc__ = ray_cluster.RayLauncher.__doc__


try:
    from scalinglab.launching import slurm
except ImportError:  # no `slurm` extra (hydra-submitit-launcher): no slurm launcher
    pass
else:

    class SlurmLauncher(slurm.SlurmLauncher):
        __doc__ = slurm.SlurmLauncher.__doc__
