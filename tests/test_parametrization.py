"""model.parametrization=sp|mup|completep: sp as before, muP's and CompleteP's init, multipliers
and optimizer groups, the same logits through the chunked loss, FSDP and compile."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh

from scalinglab.errors import ConfigError
from scalinglab.model import GPT, GPTConfig
from scalinglab.module import LanguageModel, parameter_groups

ADAMW = {"_target_": "torch.optim.AdamW", "lr": 1e-3, "eps": 1e-8, "weight_decay": 0.1}
COSINE = {"_target_": "scalinglab.schedules.Cosine", "warmup_steps": 2, "min_lr_ratio": 0.1}


def config(parametrization: str, **shape: Any) -> GPTConfig:
    shape = {
        "vocab_size": 97,
        "max_seq_len": 32,
        "d_model": 256,
        "n_layers": 4,
        "n_heads": 4,
    } | shape
    return GPTConfig(parametrization=parametrization, base_width=64, base_depth=2, **shape)


def group_of(groups: list[dict], p: torch.Tensor) -> dict:
    (group,) = [g for g in groups if any(q is p for q in g["params"])]
    return group


def test_sp_is_gpt2_init_with_the_same_random_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """sp: GPT-2's stds, and the same tensors as a model without the muP rescale at all (it draws
    no random numbers), so a seed gives the weights it gave before parametrizations existed."""
    cfg = config("sp", tie_embeddings=False, bias=True)
    assert (cfg.hidden_init_std, cfg.residual_init_std) == (0.02, 0.02 / math.sqrt(2 * 4))
    assert (cfg.attention_scale, cfg.residual_multiplier, cfg.output_multiplier) == (None, 1, 1)
    torch.manual_seed(0)
    model = GPT(cfg)
    monkeypatch.setattr("scalinglab.model.is_hidden_matrix", lambda name, p: False)
    torch.manual_seed(0)
    reference = GPT(cfg)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("parametrization", ["mup", "completep"])
@pytest.mark.parametrize("tie", [True, False])
def test_shape_counts_and_flops_do_not_depend_on_the_parametrization(
    parametrization: str, tie: bool
) -> None:
    sp, other = config("sp", tie_embeddings=tie), config(parametrization, tie_embeddings=tie)
    model = GPT(other)
    assert sum(p.numel() for p in model.parameters()) == other.n_params == sp.n_params
    assert other.n_params_nonembedding == sp.n_params_nonembedding
    assert other.flops_per_token() == sp.flops_per_token()
    assert other.flops_per_token_6n == sp.flops_per_token_6n


def test_mup_scales_hidden_init_by_inverse_sqrt_width_and_nothing_else() -> None:
    torch.manual_seed(0)
    model = GPT(config("mup", n_layers=2, tie_embeddings=False))  # width multiplier 4
    std = {name: p.std().item() for name, p in model.named_parameters() if p.dim() >= 2}
    assert std["blocks.0.attn.qkv.weight"] == pytest.approx(0.02 / 2, rel=0.02)
    assert std["blocks.0.mlp.up.weight"] == pytest.approx(0.02 / 2, rel=0.02)
    assert std["blocks.1.mlp.down.weight"] == pytest.approx(0.02 / 2 / math.sqrt(4), rel=0.02)
    for name in ("embed.weight", "pos_embed.weight", "head.weight"):
        assert std[name] == pytest.approx(0.02, rel=0.02), name


def test_completep_scales_residual_branches_by_base_depth_over_depth() -> None:
    """An 8-layer completep block adds base_depth/8 of each branch; its init does not see depth."""
    deep = config("completep", n_layers=8)
    assert deep.residual_multiplier == 2 / 8 and config("mup", n_layers=8).residual_multiplier == 1
    assert deep.residual_init_std == config("completep", n_layers=2).residual_init_std
    torch.manual_seed(0)
    model = GPT(deep)
    block, x = model.blocks[0], torch.randn(2, 8, 256)
    branch = block.attn(block.norm1(x), None)
    after_attn = x + branch / 4
    expected = after_attn + block.mlp(block.norm2(after_attn)) / 4
    torch.testing.assert_close(block(x, None), expected)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("parametrization", ["sp", "mup", "completep"])
def test_chunked_loss_sees_the_logits_forward_returns(parametrization: str, tie: bool) -> None:
    """The output multiplier reaches the chunked loss, which takes the head's weight itself."""
    torch.manual_seed(0)
    cfg = config(parametrization, tie_embeddings=tie, d_model=128)
    model = GPT(cfg)
    with torch.no_grad():  # a trained-like head, so that the multiplier moves the loss
        model.head.weight.normal_(std=1.0)
    x, y = torch.randint(0, 97, (2, 2, 32)).unbind(0)
    plain = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    torch.testing.assert_close(model.loss(x, y), plain)
    model.cfg.loss_chunk_size = 7
    torch.testing.assert_close(model.loss(x, y), plain)
    unscaled = model.hidden_states(x) @ model.head.weight.T
    unscaled = F.cross_entropy(unscaled.flatten(0, 1), y.flatten())
    moved = (plain - unscaled).abs().item()
    assert moved > 0.1 if parametrization != "sp" else moved == 0


def test_mup_attention_scale_is_one_over_head_dim() -> None:
    torch.manual_seed(0)
    cfg = config("mup", d_model=128, n_heads=2)
    attn, x = GPT(cfg).blocks[0].attn, torch.randn(2, 8, 128)
    q, k, v = attn.qkv(x).view(2, 8, 3, 2, 64).unbind(2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2) / 64).masked_fill(torch.ones(8, 8).triu(1).bool(), -math.inf)
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 8, 128)
    torch.testing.assert_close(attn(x, None), attn.proj(y))


@pytest.mark.parametrize("tie", [True, False])
def test_optimizer_groups_follow_mup_and_completep(tie: bool) -> None:
    """Hidden matrices: lr x base_width/width (mup), and weight decay x width/base_width and eps x
    1/(m_N m_L) (completep); embeddings, norms and the head keep the base lr."""
    for parametrization in ("mup", "completep"):
        cfg = config(parametrization, n_layers=8, tie_embeddings=tie, bias=True)
        model = GPT(cfg)
        groups = parameter_groups(model, cfg, ADAMW)
        optimizer = torch.optim.AdamW(groups, **{k: v for k, v in ADAMW.items() if k[0] != "_"})
        assert optimizer.param_groups[0]["lr"] == ADAMW["lr"]  # the lr callbacks log
        hidden = group_of(optimizer.param_groups, model.blocks[3].mlp.down.weight)
        assert hidden["lr"] == pytest.approx(1e-3 / 4)
        completep = parametrization == "completep"
        assert hidden["weight_decay"] == pytest.approx(0.1 * (4 if completep else 1))
        assert hidden["eps"] == pytest.approx(1e-8 / (4 * 4) if completep else 1e-8)
        for p in (model.embed.weight, model.blocks[0].norm1.weight, model.blocks[0].mlp.up.bias):
            assert group_of(optimizer.param_groups, p)["lr"] == 1e-3
            assert group_of(optimizer.param_groups, p)["weight_decay"] == 0.0
        head = group_of(optimizer.param_groups, model.head.weight)  # the embedding when tied
        assert (head["lr"], head["weight_decay"]) == (1e-3, 0.0 if tie else 0.1)


def test_sp_keeps_its_two_optimizer_groups() -> None:
    cfg = config("sp")
    groups = parameter_groups(GPT(cfg), cfg, ADAMW)
    assert [set(g) for g in groups] == [{"params"}, {"params", "weight_decay"}]


def test_per_group_lrs_keep_their_ratio_through_the_schedule() -> None:
    cfg = config("mup", d_model=128)  # width multiplier 2
    module = LanguageModel(model=cfg.to_dict(), optimizer=ADAMW, scheduler=COSINE)
    module.trainer = SimpleNamespace(max_steps=10, precision_plugin=None)
    schedule = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    seen = set()
    for _ in range(9):
        schedule.optimizer.step()
        schedule.step()
        base, *_, hidden = (g["lr"] for g in schedule.optimizer.param_groups)
        assert hidden == pytest.approx(base / 2)
        seen.add(base)
    assert len(seen) >= 7 and max(seen) == pytest.approx(1e-3)  # warm-up and decay both seen


@pytest.fixture
def one_rank_mesh(tmp_path: Path):
    """A one-process gloo group and the 2-D mesh Lightning's ModelParallelStrategy makes."""
    store = f"file://{tmp_path / 'store'}"
    torch.distributed.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    finally:
        torch.distributed.destroy_process_group()


def test_completep_shards_with_its_groups_and_loss(one_rank_mesh: Any) -> None:
    """Under FSDP2 the multipliers are constants of the blocks and the groups find the sharded
    parameters by their unsharded names."""
    torch.manual_seed(0)
    cfg = config("completep", d_model=128, loss_chunk_size=16)
    module = LanguageModel(model=cfg.to_dict(), optimizer=ADAMW, scheduler=COSINE)
    x, y = torch.randint(0, 97, (2, 2, 32)).unbind(0)
    expected = module.loss_fn(x, y).item()
    sizes = [[p.numel() for p in g["params"]] for g in parameter_groups(module.model, cfg, ADAMW)]
    module._device_mesh = one_rank_mesh  # what ModelParallelStrategy.setup_environment sets
    module.configure_model()
    groups = parameter_groups(module.model, cfg, ADAMW)
    assert [[p.numel() for p in g["params"]] for g in groups] == sizes
    # Tied: no matrix outside the blocks decays, so two groups, the base lr's first.
    assert [g.get("lr", ADAMW["lr"]) for g in groups] == [1e-3, 1e-3 / 2]
    assert module.loss_fn(x, y).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_compiled_loss_matches_eager_under_mup() -> None:
    torch.manual_seed(0)
    cfg = config("completep", d_model=128, loss_chunk_size=16)
    model = GPT(cfg)
    x, y = torch.randint(0, 97, (2, 2, 32)).unbind(0)
    torch.testing.assert_close(torch.compile(model.loss)(x, y), model.loss(x, y))


def test_unknown_parametrization_is_refused() -> None:
    with pytest.raises(ConfigError, match="parametrization"):
        config("mu-p")
    with pytest.raises(ConfigError, match="base_width"):
        GPTConfig(parametrization="mup", base_width=0)
