"""Shared test fixtures: W&B offline under tmp_path, one token cache per session, config composition."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from scalinglab.train import CONFIG_DIR

# A few steps of the smallest model on a small synthetic language: seconds on a CPU.
TINY_TRAINING = [
    "model=gpt_nano",
    "data.batch_size=4",
    "data.seq_len=32",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "scheduler.warmup_steps=2",
]
TINY = [*TINY_TRAINING, "data=synthetic", "data.n_train_tokens=65536", "data.val_tokens=2048"]


def budgeted(overrides: list[str]) -> list[str]:
    """Overrides (TINY's, say) for a job whose steps come from a budget or from wsd_branches:
    without trainer.max_steps, which would contradict them."""
    return [o for o in overrides if not o.startswith("trainer.max_steps=")]


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("token_cache")


@pytest.fixture(scope="session", autouse=True)
def offline_session(tmp_path_factory: pytest.TempPathFactory, token_cache: Path):
    """W&B offline and the session's token cache from the session's start: module- and
    session-scoped fixtures (a job trained once for a module's tests) run before the per-test
    `offline` below, in whatever shell the tests were started from, with or without a W&B login."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SCALINGLAB_CACHE", str(token_cache))
    patch.setenv("WANDB_MODE", "offline")
    patch.setenv("WANDB_SILENT", "true")
    patch.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, token_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """No test touches the network or the user's W&B and cache directories.

    W&B publishes its service in WANDB_SERVICE for child processes to reuse; a test that runs W&B
    in-process would leave it behind, and later subprocess sweeps would attach to this process's
    long-lived service (where a killed job's run id stays "in use"). So every WANDB_* variable is
    restored after each test.
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("SCALINGLAB_CACHE", str(token_cache))
    (tmp_path / "wandb").mkdir(exist_ok=True)
    yield
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        del os.environ[key]
    os.environ.update(saved)


def compose_train(*overrides: str, output_dir: Path | None = None) -> DictConfig:
    """The root config with overrides, as `scaling-train` composes it (outside a Hydra run)."""
    extra = [f"paths.output_dir={output_dir}", "sweep_id=test"] if output_dir else []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, *extra])


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`scaling-train ARGS` in a fresh process, its outputs under cwd."""
    return subprocess.run(
        [sys.executable, "-m", "scalinglab.train", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def foreign_checkpoint(run_dir: Path, run_id: str, **shape: object) -> Path:
    """Replace a run's checkpoints/last.ckpt with another run's: `run_id`'s, of the run's model
    (run.json's) reshaped by `shape` (fresh weights), written as a run writes one; its path."""
    import json

    import torch

    from scalinglab.callbacks import save_verified
    from scalinglab.module import LanguageModel

    path = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=True)
    model = json.loads((run_dir / "run.json").read_text())["model"]
    hyper_parameters = {**state["hyper_parameters"], "model": {**model, **shape}}
    module = LanguageModel(**hyper_parameters)
    other = {**state, "state_dict": module.state_dict(), "hyper_parameters": hyper_parameters}
    save_verified({**other, "run_id": run_id}, path)
    return path
