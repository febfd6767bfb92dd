"""Every option of every config group composes, and what it names instantiates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from scalinglab.data import write_shard
from scalinglab.guards import _mappings, build, target_class
from scalinglab.model import GPTConfig
from scalinglab.planning import plan
from scalinglab.train import CONFIG_DIR
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted([*(ROOT / "conf").rglob("*.yaml"), *(ROOT / "sweeps").glob("*.yaml")])


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    for group in ("model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks"):
        assert options(group), group
    assert len(options("model")) >= 10


# The README's table of named sizes: (d_model, n_layers, n_heads, non-embedding N to 3 figures).
README_SIZES = {
    "gpt": (256, 4, 4, 3.15e6),  # the explicit shape's defaults: gpt_tiny's
    "gpt_nano": (64, 1, 2, 49.3e3),
    "gpt_micro": (128, 2, 4, 394e3),
    "gpt_mini": (192, 3, 6, 1.33e6),
    "gpt_tiny": (256, 4, 4, 3.15e6),
    "gpt_small": (384, 6, 6, 10.6e6),
    "gpt_base": (512, 8, 8, 25.2e6),
    "gpt_medium": (768, 12, 12, 85e6),
    "gpt_large": (1024, 16, 16, 201e6),
    "gpt_xl": (1536, 24, 24, 680e6),
    "gpt_1b": (1792, 28, 28, 1.08e9),
}


def test_every_model_option_is_in_the_readme_table() -> None:
    assert sorted(README_SIZES) == options("model")


@pytest.mark.parametrize("name", options("model"))
def test_model_options(name: str, tmp_path: Path) -> None:
    model = build(compose_train(f"model={name}", output_dir=tmp_path).model, vocab_size=256)
    d_model, n_layers, n_heads, n_params_nonembedding = README_SIZES[name]
    assert isinstance(model, GPTConfig)
    assert (model.d_model, model.n_layers, model.n_heads) == (d_model, n_layers, n_heads)
    assert float(f"{model.n_params_nonembedding:.3g}") == n_params_nonembedding


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
    trainer = build(  # max_steps: the job's plan's (the config's is null: the budget's)
        cfg.trainer, max_steps=10, precision="32-true", logger=False, default_root_dir=str(tmp_path)
    )
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


def test_debug_fast_is_a_few_steps_of_the_smallest_model(tmp_path: Path) -> None:
    cfg = compose_train("debug=fast", output_dir=tmp_path)
    assert (cfg.model.d_model, cfg.model.n_layers) == (64, 1)  # gpt_nano
    assert (cfg.trainer.max_steps, cfg.data.batch_size, cfg.data.seq_len) == (5, 4, 32)
    assert plan(cfg).steps == 5


@pytest.mark.parametrize("name", options("sweep"))
def test_sweep_options_set_their_study_and_grid(name: str, tmp_path: Path) -> None:
    """Each study names itself (its ids and directories) and sweeps keys the config has."""
    cfg = compose_train(f"sweep={name}", output_dir=tmp_path)
    assert cfg.name == name
    grid = OmegaConf.to_container(cfg.hydra.sweeper.params) if "hydra" in cfg else None
    params = yaml.safe_load((Path(CONFIG_DIR) / "sweep" / f"{name}.yaml").read_text())
    for key in params["hydra"]["sweeper"]["params"]:
        assert OmegaConf.select(cfg, key, default="absent") != "absent", key
    assert grid is None or grid == params["hydra"]["sweeper"]["params"]


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_target_is_allowed(path: Path) -> None:
    """The allow-list lets through every class that conf/ and sweeps/ name."""
    targets = [
        (key, node["_target_"])
        for key, node in _mappings(OmegaConf.to_container(OmegaConf.load(path)))
        if "_target_" in node
    ]
    for key, name in targets:
        if name.endswith("SlurmLauncher"):
            pytest.importorskip("hydra_plugins.hydra_submitit_launcher")  # the `slurm` extra
        assert isinstance(target_class(f"{key}._target_", name), type)


def test_the_shipped_configs_name_classes() -> None:
    names = {
        node["_target_"]
        for path in SHIPPED_CONFIGS
        for _, node in _mappings(OmegaConf.to_container(OmegaConf.load(path)))
        if "_target_" in node
    }
    assert {"torch.optim.AdamW", "pytorch_lightning.Trainer", "scalinglab.model.GPTConfig"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_composes_on_top_of_the_defaults(name: str, tmp_path: Path) -> None:
    """`experiment=NAME` (lightning-hydra-template's habit) sets its keys globally, and the command
    line still overrides them."""
    raw = yaml.safe_load((Path(CONFIG_DIR) / "experiment" / f"{name}.yaml").read_text())
    assert (
        (Path(CONFIG_DIR) / "experiment" / f"{name}.yaml")
        .read_text()
        .startswith("# @package _global_")
    )
    cfg = compose_train(f"experiment={name}", output_dir=tmp_path)
    assert cfg.name == raw["name"] == name
    steps = plan(cfg).steps
    assert steps == cfg.plan.steps > 1
    assert compose_train(f"experiment={name}", "name=mine", output_dir=tmp_path).name == "mine"


def test_the_example_experiment_is_what_it_says(tmp_path: Path) -> None:
    cfg = compose_train("experiment=small_chinchilla", output_dir=tmp_path)
    model = plan(cfg).model
    assert (model.d_model, model.n_layers) == (384, 6)  # gpt_small
    assert cfg.budget.tokens_per_param == 20 and cfg.scheduler._target_.endswith("Cosine")
