"""The GPT: exact parameter and FLOP formulas, sizing rules, causality, bad shapes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from scalinglab.errors import ConfigError
from scalinglab.model import GPT, GPTConfig, head_dim_for, shape_for_params

MODEL_DIR = Path(__file__).parents[1] / "conf" / "model"


@pytest.mark.parametrize(
    "mlp,positions,tie,bias,bert",
    list(
        itertools.product(
            ["gelu", "swiglu"], ["learned", "rope"], [True, False], [False, True], [False, True]
        )
    ),
)
def test_parameter_counts_match_the_module(
    mlp: str, positions: str, tie: bool, bias: bool, bert: bool
) -> None:
    """bert: the embedding norm and the head transform (objective=mlm's shape)."""
    cfg = GPTConfig(
        vocab_size=97, max_seq_len=48, d_model=64, n_layers=3, n_heads=4,
        mlp=mlp, positions=positions, tie_embeddings=tie, bias=bias,
        embedding_norm=bert, head_transform=bert,
    )  # fmt: skip
    model = GPT(cfg)
    params = dict(model.named_parameters())  # tied weights appear once
    assert sum(p.numel() for p in params.values()) == cfg.n_params
    embedding = {"embed.weight", "pos_embed.weight", "head.weight"}
    nonembedding = sum(p.numel() for name, p in params.items() if name not in embedding)
    assert nonembedding == cfg.n_params_nonembedding


@pytest.mark.parametrize("head_transform", [False, True])
def test_flops_per_token_counts_every_matmul(head_transform: bool) -> None:
    """6 x (multiply-adds per token of every Linear, logits and head transform included) + the
    attention term."""
    cfg = GPTConfig(
        vocab_size=101, max_seq_len=64, d_model=128, n_layers=2, n_heads=2, mlp="swiglu",
        head_transform=head_transform,
    )  # fmt: skip
    model = GPT(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 2 * cfg.n_layers * 64 * cfg.d_model  # QK^T and AV multiply-adds per token
    assert cfg.flops_per_token(64) == 6 * (linear + attention)
    assert cfg.flops_per_token_6n == 6 * cfg.n_params


def test_named_ladder_spans_0p1m_to_1b_by_the_aspect_rule() -> None:
    sizes = []
    for path in MODEL_DIR.glob("gpt_*.yaml"):
        shape = yaml.safe_load(path.read_text())
        cfg = GPTConfig(vocab_size=256, **{k: shape[k] for k in ("d_model", "n_layers", "n_heads")})
        assert cfg.d_model == 64 * cfg.n_layers, path.name
        assert cfg.d_model // cfg.n_heads == head_dim_for(cfg.d_model), path.name
        sizes.append(cfg.n_params_nonembedding)
    assert len(sizes) >= 8
    assert min(sizes) < 0.2e6 and 0.7e9 < max(sizes) < 1.5e9


@pytest.mark.parametrize("target", [2.5e4, 1e5, 4e5, 3e6, 2e7, 1.2e8, 1e9])
def test_target_params_lands_near_the_target(target: float) -> None:
    cfg = GPTConfig(target_params=int(target), mlp="swiglu")
    assert cfg.d_model // cfg.n_heads == head_dim_for(cfg.d_model)
    assert cfg.n_layers >= 2
    assert abs(cfg.n_params_nonembedding / target - 1) < 0.1
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads) == shape_for_params(int(target), mlp="swiglu")


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_attention_is_causal(positions: str) -> None:
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=50, max_seq_len=16, d_model=32, n_layers=2, n_heads=2, positions=positions
        )
    )
    x = torch.randint(0, 50, (2, 16))
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    a, b = model(x), model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_untrained_loss_is_near_uniform() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, max_seq_len=32, d_model=64, n_layers=2, n_heads=2))
    x, y = torch.randint(0, 256, (2, 4, 32))
    assert abs(model.loss(x, y).item() - torch.log(torch.tensor(256.0)).item()) < 0.1


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"d_model": 100, "n_heads": 3}, "model.d_model=100 is not divisible by model.n_heads=3"),
        ({"n_layers": 0}, "model.n_layers"),
        ({"mlp": "relu"}, "model.mlp"),
        ({"target_params": -5}, "model.target_params"),
    ],
)
def test_bad_shapes_are_config_errors(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        GPTConfig(**kwargs)


def test_sequence_longer_than_the_model_is_refused() -> None:
    model = GPT(GPTConfig(vocab_size=10, max_seq_len=8, d_model=32, n_layers=1, n_heads=1))
    with pytest.raises(ValueError, match="max_seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_chunked_loss_matches_the_plain_loss() -> None:
    torch.manual_seed(0)
    shape = dict(vocab_size=300, max_seq_len=32, d_model=64, n_layers=2, n_heads=2)
    plain, chunked = GPT(GPTConfig(**shape)), GPT(GPTConfig(**shape, loss_chunk_size=50))
    chunked.load_state_dict(plain.state_dict())
    x, y = torch.randint(0, 300, (2, 4, 32))
    a, b = plain.loss(x, y), chunked.loss(x, y)
    a.backward(), b.backward()
    assert b.item() == pytest.approx(a.item(), abs=1e-5)
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_bert_shape_is_embedding_norm_and_head_transform() -> None:
    """The embedding LayerNorm normalises token + position embeddings before the blocks, and the
    head transform (dense, exact GELU, LayerNorm) sits between the final norm and the head."""
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=40, max_seq_len=16, d_model=32, n_layers=1, n_heads=2, causal=False,
        embedding_norm=True, head_transform=True, bias=True,
    )  # fmt: skip
    model = GPT(cfg).eval()
    x = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        for p in model.parameters():  # norms away from the identity, so leaving one out shows
            p.add_(0.1 * torch.randn_like(p))
        h = model.embed_norm(model.embed(x) + model.pos_embed.weight)
        for block in model.blocks:
            h = block(h, None)
        t = model.head_transform
        h = F.gelu(model.norm(h) @ t.dense.weight.T + t.dense.bias)
        assert torch.allclose(model(x), t.norm(h) @ model.head.weight.T, atol=1e-5)


def test_clm_has_neither_bert_module() -> None:
    model = GPT(GPTConfig(vocab_size=10, max_seq_len=8, d_model=32, n_layers=1, n_heads=1))
    assert model.embed_norm is None and model.head_transform is None


def test_head_transform_is_a_hidden_matrix_under_mup_and_feeds_the_logit_multiplier() -> None:
    """Its dense maps width to width: muP's hidden init and lr; the 1/m logit multiplier scales
    the transform's output (the head's input), not its input, which its LayerNorm would undo."""
    from scalinglab.module import parameter_groups

    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=40, max_seq_len=16, d_model=256, n_layers=1, n_heads=4, causal=False,
        embedding_norm=True, head_transform=True, parametrization="mup", base_width=64,
    )  # fmt: skip
    model = GPT(cfg)
    dense = model.head_transform.dense.weight
    assert dense.std().item() == pytest.approx(cfg.hidden_init_std, rel=0.05)
    groups = parameter_groups(model, cfg, {"lr": 1e-2})
    hidden = next(g for g in groups if g.get("lr") == 1e-2 * cfg.hidden_lr_multiplier)
    assert any(p is dense for p in hidden["params"])
    x = torch.randint(0, 40, (1, 16))
    with torch.no_grad():
        transformed = model.head_transform(model.hidden_states(x))
        assert torch.allclose(model.head_input(x), transformed / 4, atol=1e-6)
