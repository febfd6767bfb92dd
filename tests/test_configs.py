"""Every option of every config group composes, and what it names instantiates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from scalinglab.data import write_shard
from scalinglab.model import GPTConfig
from scalinglab.planning import build
from scalinglab.train import CONFIG_DIR
from tests.conftest import TINY_TRAINING, compose_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    for group in ("model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks"):
        assert options(group), group
    assert len(options("model")) >= 10


@pytest.mark.parametrize("name", options("model"))
def test_model_options(name: str, tmp_path: Path) -> None:
    model = build(compose_train(f"model={name}", output_dir=tmp_path).model, vocab_size=256)
    assert isinstance(model, GPTConfig) and model.n_params > 0


@pytest.mark.parametrize("name", options("scheduler"))
def test_scheduler_options(name: str, tmp_path: Path) -> None:
    schedule = instantiate(compose_train(f"scheduler={name}", output_dir=tmp_path).scheduler)
    multipliers = [schedule(step, 100) for step in range(100)]
    assert all(0.0 <= m <= 1.0 for m in multipliers) and max(multipliers) == pytest.approx(1.0)


@pytest.mark.parametrize("name", options("optimizer"))
def test_optimizer_options(name: str, tmp_path: Path) -> None:
    cfg = OmegaConf.to_container(compose_train(f"optimizer={name}", output_dir=tmp_path).optimizer)
    target = cfg.pop("_target_")
    assert isinstance(
        get_class(target)([torch.nn.Parameter(torch.zeros(2))], **cfg), torch.optim.Optimizer
    )


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_options(name: str, tmp_path: Path) -> None:
    cfg = compose_train(f"trainer={name}", output_dir=tmp_path)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    trainer = build(cfg.trainer, precision="32-true", logger=False, default_root_dir=str(tmp_path))
    assert isinstance(trainer, pl.Trainer)


@pytest.mark.parametrize("name", options("logger"))
def test_logger_options(name: str, tmp_path: Path) -> None:
    cfg = compose_train(f"logger={name}", output_dir=tmp_path)
    for logger_cfg in cfg.logger.values():
        logger = build(logger_cfg)
        assert isinstance(logger, pl.loggers.Logger)


@pytest.mark.parametrize("name", options("callbacks"))
def test_callback_options(name: str, tmp_path: Path) -> None:
    cfg = compose_train(f"callbacks={name}", output_dir=tmp_path)
    assert all(isinstance(build(c), pl.Callback) for c in cfg.callbacks.values())


@pytest.mark.parametrize("name", options("data"))
def test_data_options(name: str, tmp_path: Path) -> None:
    if name == "hf":
        pytest.importorskip("datasets")
    (tmp_path / "corpus.txt").write_text("print('hello')\n" * 1000)
    write_shard(tmp_path / "tokens.bin", np.arange(10_000, dtype=np.uint16) % 256)
    paths = {"text": "corpus.txt", "hf": "corpus.txt", "shards": "tokens.bin"}
    overrides = [f"data={name}"]
    if name in paths:
        overrides.append(f"data.path={tmp_path / paths[name]}")
    datamodule = build(compose_train(*overrides, output_dir=tmp_path).data)
    assert isinstance(datamodule, pl.LightningDataModule)


@pytest.mark.parametrize("group", ["debug", "sweep"])
def test_global_options_compose(group: str, tmp_path: Path) -> None:
    for name in options(group):
        cfg = compose_train(*TINY_TRAINING, f"{group}={name}", output_dir=tmp_path)
        assert cfg.trainer.max_steps > 0
