"""Stable ids: the same command finds its own directories (and its W&B runs) again, and different
commands never share one. `sweep_id` and `safe_name` are resolvers of the root config."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


def digest(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


# Options that say how to run a command or label it (W&B tags), not what it trains: the same
# command with them finds its own directories (conf/hydra/default.yaml leaves them out of the jobs'
# directory names too).
HOW_TO_RUN = ("rerun_stale=", "progress_bar=", "tags=", "+tags=")


def sweep_id_from_argv(name: str) -> str:
    """`name`-hash of the command line's overrides (launcher and hydra.* settings excluded).

    Registered with use_cache: Hydra copies the resolver cache from the sweep's config into each
    job's, so every job of a sweep (in-process or on SLURM) sees the id its launcher computed.
    """
    overrides = sorted(
        a
        for a in sys.argv[1:]
        if not a.startswith(
            ("-", "hydra.", "hydra/", "launcher=", "sweep_id=", "run_id=", *HOW_TO_RUN)
        )
        and "=" in a
    )
    return f"{safe_name(name)}-{digest(' '.join(overrides))}"


def safe_name(text: str, limit: int = 150) -> str:
    """A file- and W&B-safe name; long ones keep a prefix and a hash of the whole."""
    text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)
    return text if len(text) <= limit else f"{text[: limit - 9]}-{digest(text)}"


OmegaConf.register_new_resolver("sweep_id", sweep_id_from_argv, use_cache=True, replace=True)
OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)


def job_identity(cfg: DictConfig, output_dir: Path, branch: bool = False) -> tuple[str, str]:
    """(run_id, display name): stable for a given sweep and job overrides. A WSD branch is named
    by its trunk's name and its own directory (its token count)."""
    name = cfg.name
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == hydra.types.RunMode.MULTIRUN:
            name = hc.job.override_dirname or cfg.name
    if branch:
        name = f"{name}/{output_dir.name}"
    run_id = cfg.run_id or f"{cfg.sweep_id}-{digest(str(output_dir.resolve()), 6)}"
    return safe_name(str(run_id), 120), name
