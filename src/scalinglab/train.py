"""Train one GPT: `scaling-train [overrides]`, or a sweep with `scaling-train -m ...`.

`main` only composes the config (Hydra); `train(cfg)` is a plain function that tests and scripts
call: it plans the job once (scalinglab.planning) and hands the plan to scalinglab.job, which
trains it, resumes it or skips it. torch, Lightning and W&B load when a job runs, not before Hydra
reads the command line: `--help`, `--cfg` and shell completion take well under a second instead of
five.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from scalinglab.guards import CONFIG_DIR as _CONFIG_DIR
from scalinglab.planning import plan
from scalinglab.records import Status


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume, or skip) one job, then its WSD decay branches if it has any.

    Returns the job's final run record (with branches: the longest run's; each branch has its own
    record under `branches/`).
    """
    job = plan(cfg)  # all that can refuse the config, before the job's directory and lock exist
    from scalinglab.job import train_job  # torch and Lightning: only once a job runs

    record = train_job(job)
    for branch in job.branches:
        if record.get("status") == Status.COMPLETED:
            train_job(branch)
    return record


def register_plugins() -> None:
    """Register scalinglab's Hydra plugins (the sweeper and launchers in hydra_plugins.scalinglab).

    Hydra finds plugins by scanning the hydra_plugins namespace, which an editable install's
    import hook hides from its scan. The scan also re-executes Hydra's own plugin modules, so it
    runs first, and our subclasses are imported against the classes it leaves behind.
    """
    from hydra.core.plugins import Plugins
    from hydra.plugins.plugin import Plugin

    import hydra_plugins.scalinglab as ours

    plugins = Plugins.instance()
    for module_info in pkgutil.iter_modules(ours.__path__):
        module = importlib.import_module(f"{ours.__name__}.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Plugin)
                and value.__module__ == module.__name__
            ):
                plugins.register(value)


register_plugins()


def share_repository_across_group_queries() -> None:
    """Make `--help` answer in under a second instead of 1.7 s.

    Hydra's help lists every config group by asking its config loader about 110 times for a
    group's options, and each query deep-copies the whole config repository first (about 20 ms; a
    known Hydra cost, facebookresearch/hydra#2907). Help only reads the repository, so here queries
    with the same search path share one copy. Hydra's private API: if it changes, help is just slow.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    create_repo = getattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", None)
    if create_repo is None:
        return
    repos: dict[tuple, Any] = {}

    def get_group_options(
        self: ConfigLoaderImpl,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        key = (id(self), config_name, tuple(overrides or ()))
        if key not in repos:
            repos[key] = create_repo(self, config_name, list(overrides or ()))[1]
        return repos[key].get_group_options(group_name, results_filter)

    ConfigLoaderImpl.get_group_options = get_group_options


if {"--help", "-h"} & set(sys.argv[1:]):
    share_repository_across_group_queries()

# The shipped configs (in an editable install, the repository's conf/, live): as a path for tests
# and scripts that compose with initialize_config_dir, and as the package Hydra reads them from.
CONFIG_DIR = str(_CONFIG_DIR)


@hydra.main(version_base="1.3", config_path="pkg://scalinglab.conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except SystemExit:
        # A signal stopped the job (recorded `interrupted`): the sweep stops with it, launching no
        # further job, its summary up to date. The same command again resumes it.
        from scalinglab.sweeping import update_summary

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == hydra.types.RunMode.MULTIRUN:
            update_summary(Path(hydra_cfg.sweep.dir))
        raise


if __name__ == "__main__":
    main()
