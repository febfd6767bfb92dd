"""A job directory holds the runs of one config: a relaunch whose config differs from the one a run
was trained with is refused, naming the key, and nothing in the directory is touched."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from scalinglab.provenance import config_hash, first_difference, training_config
from tests.conftest import TINY, compose_train, run_cli

SWEEP = """# @package _global_
defaults:
  - override /data: synthetic
name: mine
seed: 0
optimizer:
  lr: {lr}
hydra:
  sweeper:
    params:
      seed: 0,1
"""


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def user_sweep(config_dir: Path, lr: float) -> Path:
    (config_dir / "sweep").mkdir(parents=True, exist_ok=True)
    (config_dir / "sweep" / "mine.yaml").write_text(SWEEP.format(lr=lr))
    return config_dir


def test_the_hash_is_of_what_trains_not_where_or_how_it_runs(tmp_path: Path) -> None:
    base = compose_train(*TINY, output_dir=tmp_path / "a")
    elsewhere = compose_train(
        *TINY, "threads=1", "name=other", "logger=wandb", output_dir=tmp_path / "b"
    )
    assert config_hash(base) == config_hash(elsewhere)
    other_lr = compose_train(*TINY, "optimizer.lr=1e-4", output_dir=tmp_path / "a")
    assert config_hash(other_lr) != config_hash(base)
    found = first_difference(training_config(base), training_config(other_lr))
    assert found is not None and found[0] == "optimizer.lr" and found[2] == 1e-4
    assert "paths" not in training_config(base) and "cache_dir" not in training_config(base)["data"]


def test_an_edited_sweep_file_is_refused_not_relabelled(tmp_path: Path) -> None:
    """The same command after the sweep file's lr changed: the runs trained at the old lr are
    neither skipped as done nor joined by new ones at the new lr; nothing there is rewritten."""
    config_dir = user_sweep(tmp_path / "configs", lr=1e-3)
    command = ["-m", f"--config-dir={config_dir}", "sweep=mine", *TINY, "threads=1"]
    first = run_cli(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/run.json")]
    assert len(records) == 2 and all(len(r["config_hash"]) == 16 for r in records)
    before = snapshot(sweep_dir)

    again = run_cli(*command, cwd=tmp_path)  # unchanged: skipped, and nothing rewritten
    assert again.returncode == 0, again.stderr[-2000:]
    after = snapshot(sweep_dir)
    for name, content in before.items():
        if name.endswith(".log"):  # a job's log gains the line that says it was skipped
            assert after[name].startswith(content) and b"skipping" in after[name][len(content) :]
        elif "summary" not in name:
            assert after[name] == content, name
    before = after

    user_sweep(config_dir, lr=2e-3)
    edited = run_cli(*command, cwd=tmp_path)
    assert edited.returncode != 0
    assert "2 of 2 jobs refused before launch" in edited.stderr
    assert "optimizer.lr=0.001 there, 0.002 now" in edited.stderr
    assert "Traceback" not in edited.stderr
    assert snapshot(sweep_dir) == before


def test_a_run_dir_of_another_config_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """hydra.run.dir pointing at another config's finished run; then a --config-dir model of the
    same name and another width."""
    run_dir = tmp_path / "run"
    first = run_cli(*TINY, "threads=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(run_dir)
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").model.d_model == 64
    other = run_cli(*TINY, "model.d_model=32", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert other.returncode != 0
    line = [x for x in other.stderr.splitlines() if "refused" in x]
    assert line and "model.d_model=64 there, 32 now" in line[0], other.stderr[-2000:]
    assert snapshot(run_dir) == before  # its .hydra/ too: Hydra no longer rewrites it
