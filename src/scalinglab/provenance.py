"""A job directory holds the runs of one config: what a job trains is hashed into its record.

A launch finds a job's directory by its ids (scalinglab.ids), which come from the command line.
The command does not say everything: a sweep file or a `--config-dir` config can change under the
same command, and `hydra.run.dir` can point anywhere. So a relaunch skips or resumes a job only when
the config it would train is the one its run was trained with (`config_hash` in run.json);
otherwise it is refused, in one line naming the first key that differs, and nothing in the
directory is touched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scalinglab.errors import ConfigError
from scalinglab.records import DamagedRecord, read_run

# Root keys that say where a job writes, how it is named, logged, observed or scheduled on the
# machine: not what it trains. Two configs that differ only here train the same run.
NOT_TRAINED = frozenset(
    {
        "hydra",
        "paths",
        "sweep_id",
        "run_id",
        "name",
        "tags",
        "logger",
        "callbacks",
        "rerun_stale",
        "progress_bar",
        "threads",
        "compile",
        "peak_flops",
    }
)
NOT_TRAINED_DATA = ("cache_dir", "num_workers")  # where tokenized shards are kept; loader workers


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """The job's config, resolved, without the NOT_TRAINED keys (each kept node resolved alone,
    so that an output path the job has not been given yet is never read)."""
    kept: dict[str, Any] = {}
    for key in cfg:
        if key in NOT_TRAINED:
            continue
        value = cfg[key]
        kept[key] = (
            OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        )
    if isinstance(kept.get("data"), dict):
        for key in NOT_TRAINED_DATA:
            kept["data"].pop(key, None)
    return kept


def config_hash(cfg: DictConfig) -> str:
    """16 hex digits of sha256 over the training config as canonical JSON."""
    text = json.dumps(training_config(cfg), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key, in `new`'s order, whose value differs (None where none does)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in [*new, *(k for k in old if k not in new)]:
            found = first_difference(old.get(name), new.get(name), f"{key}.{name}".lstrip("."))
            if found:
                return found
        return None
    return None if old == new else (key, old, new)


def refuse_another_config(output_dir: Path, cfg: DictConfig) -> None:
    """Raise ConfigError where `output_dir` holds a run (completed or not) of another config.

    A record without a hash (written before records had one) or a damaged one passes: the job
    decides what to do with it."""
    try:
        record = read_run(output_dir)
    except DamagedRecord:
        return
    if not record or not record.get("config_hash") or record["config_hash"] == config_hash(cfg):
        return
    what = "another config"
    try:
        old = training_config(OmegaConf.load(Path(output_dir) / ".hydra" / "config.yaml"))
        found = first_difference(old, training_config(cfg))
        if found:
            key, then, now = found
            what = f"another config ({key}={then!r} there, {now!r} now)"
    except Exception:  # the saved config is gone or no longer resolves: the hash still differs
        pass
    raise ConfigError(
        f"{output_dir} holds a {record.get('status', 'unknown')} run of {what}: refused; launch "
        "it under another sweep_id (or hydra.run.dir), or delete that run"
    )
