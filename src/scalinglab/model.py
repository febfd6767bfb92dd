"""A GPT decoder, small enough to read in one sitting.

Pre-norm Transformer blocks, causal self-attention through `scaled_dot_product_attention`, GELU or
SwiGLU MLP, learned or rotary positions, tied or untied embeddings, no biases by default.

Shape and cost are computed from the config alone (`GPTConfig.n_params`, `.flops_per_token`), so a
sweep can size models and budgets before building them; a test checks the formulas against the
module's own parameters.

Size rule for `target_params` and the named ladder in `conf/model/`: heads of 64 dimensions (32
below d_model 256), an aspect ratio d_model / n_layers near 64 (Kaplan et al. 2020 found loss flat
over a wide band of aspect ratios around this) and at least 2 layers, d_ff = 4 d_model for GELU and
the parameter-matched 8/3 d_model for SwiGLU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from scalinglab.errors import ConfigError
from scalinglab.ops import chunked_cross_entropy

HEAD_DIM = 64
ASPECT_RATIO = 64  # d_model / n_layers of the size rule


@dataclass
class GPTConfig:
    vocab_size: int = 256
    max_seq_len: int = 256
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int | None = None  # None: 4 d_model (gelu) or 8/3 d_model rounded to 64 (swiglu)
    mlp: str = "gelu"  # "gelu" | "swiglu"
    positions: str = "learned"  # "learned" | "rope"
    tie_embeddings: bool = True
    bias: bool = False
    dropout: float = 0.0
    # If set, d_model / n_layers / n_heads come from the size rule instead (non-embedding count).
    target_params: int | None = None
    # If set, the loss takes the logits this many tokens at a time and never holds all of them
    # (scalinglab.ops.chunked_cross_entropy): with a large vocabulary they dominate memory.
    loss_chunk_size: int | None = None
    # Recompute each block's activations in the backward pass instead of keeping them: less memory
    # for about one more forward pass of compute per step; the results are the same.
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.target_params is not None:
            if self.target_params <= 0:
                raise ConfigError(f"model.target_params must be positive, got {self.target_params}")
            self.d_model, self.n_layers, self.n_heads = shape_for_params(
                self.target_params, mlp=self.mlp, bias=self.bias
            )
            self.d_ff = None
        if self.d_ff is None:
            self.d_ff = default_d_ff(self.d_model, self.mlp)
        self.validate()

    def validate(self) -> None:
        for key in ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "d_ff"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}"
            )
        if self.positions == "rope" and (self.d_model // self.n_heads) % 2:
            raise ConfigError("model.positions=rope needs an even head dimension")
        if self.mlp not in ("gelu", "swiglu"):
            raise ConfigError(f"model.mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")
        if self.positions not in ("learned", "rope"):
            raise ConfigError(
                f"model.positions must be 'learned' or 'rope', got {self.positions!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.loss_chunk_size is not None and self.loss_chunk_size <= 0:
            raise ConfigError(f"model.loss_chunk_size must be positive, got {self.loss_chunk_size}")

    # ---- exact counts, from the shape alone ---------------------------------------------------
    @property
    def n_params_embedding(self) -> int:
        """Token embedding, learned positions and an untied output head: lookups, not matmuls."""
        n = self.vocab_size * self.d_model
        if self.positions == "learned":
            n += self.max_seq_len * self.d_model
        if not self.tie_embeddings:
            n += self.vocab_size * self.d_model
        return n

    @property
    def n_params_nonembedding(self) -> int:
        """Kaplan et al.'s N: every parameter of the blocks and the final norm."""
        d, f, b = self.d_model, self.d_ff, int(self.bias)
        norm = d * (1 + b)
        attn = 4 * d * d + b * 4 * d
        mlp = 3 * d * f + b * (2 * f + d) if self.mlp == "swiglu" else 2 * d * f + b * (f + d)
        return self.n_layers * (2 * norm + attn + mlp) + norm

    @property
    def n_params(self) -> int:
        return self.n_params_embedding + self.n_params_nonembedding

    @property
    def flops_per_token_6n(self) -> int:
        """Training FLOPs per token by C = 6 N D, with N all parameters (Hoffmann et al. 2022)."""
        return 6 * self.n_params

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6 x (matmul weights, the logit head included) plus attention.

        The attention term, 6 x 2 n_layers seq_len d_model, counts QK^T and AV forward and backward
        at full (not causal-halved) cost, as PaLM's MFU accounting does.
        """
        seq_len = self.max_seq_len if seq_len is None else seq_len
        mlp_matrices = 3 if self.mlp == "swiglu" else 2
        block_weights = 4 * self.d_model**2 + mlp_matrices * self.d_model * self.d_ff
        matmul_weights = self.n_layers * block_weights + self.vocab_size * self.d_model
        return 6 * matmul_weights + 12 * self.n_layers * seq_len * self.d_model

    def to_dict(self) -> dict:
        return asdict(self)


def default_d_ff(d_model: int, mlp: str) -> int:
    if mlp == "swiglu":  # same parameter count as a 4x GELU MLP, rounded for fast matmuls
        step = head_dim_for(d_model)
        return max(step, round(8 * d_model / 3 / step) * step)
    return 4 * d_model


def head_dim_for(d_model: int) -> int:
    """64-dimensional heads, or 32 below d_model 256, so the smallest models still have a few."""
    return 32 if d_model < 256 else HEAD_DIM


def shape_for_params(target: int, mlp: str = "gelu", bias: bool = False) -> tuple[int, int, int]:
    """(d_model, n_layers, n_heads) whose non-embedding count is closest to `target`.

    Widths are multiples of the head size (head_dim_for), depths at least 2. For each depth the
    width nearest the target is taken; among shapes that land within 10% of the target, the one
    whose aspect ratio is closest to ASPECT_RATIO wins, else the closest count.
    """
    candidates = []
    for n_layers in range(2, 129):
        # 12 L d^2 is the leading term of the count for d_ff = 4 d (and its SwiGLU match).
        d_guess = math.sqrt(target / (12 * n_layers))
        step = head_dim_for(int(d_guess))
        for d_model in {
            max(32, math.floor(d_guess / step) * step),
            math.ceil(d_guess / step) * step,
        }:
            heads = d_model // head_dim_for(d_model)
            n = GPTConfig(d_model=d_model, n_layers=n_layers, n_heads=heads, mlp=mlp, bias=bias)
            error = abs(n.n_params_nonembedding / target - 1)
            aspect = abs(math.log(d_model / n_layers / ASPECT_RATIO))
            candidates.append(
                (error > 0.1, aspect if error <= 0.1 else error, d_model, n_layers, heads)
            )
    _, _, d_model, n_layers, heads = min(candidates)
    return d_model, n_layers, heads


# ---- the network ------------------------------------------------------------------------------


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, ...]:
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()  # (T, head_dim / 2) each


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]  # rotate consecutive pairs of each head
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, head_dim)
        if rotary is not None:
            cos, sin = (t[:T] for t in rotary)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.up = nn.Linear(cfg.d_model, cfg.d_ff * (2 if self.swiglu else 1), bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), rotary))
        return x + self.drop(self.mlp(self.norm2(x)))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = (
            nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.positions == "learned" else None
        )
        if cfg.positions == "rope":
            cos, sin = rotary_tables(cfg.max_seq_len, cfg.d_model // cfg.n_heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.apply(self._init_weights)
        # GPT-2's residual scaling: each block adds two projections into the residual stream.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, vocab_size)."""
        return self.head(self.hidden_states(idx))

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> the final normalised hidden states (B, T, d_model)."""
        T = idx.shape[1]
        if self.cfg.max_seq_len < T:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
        x = self.embed(idx)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(T, device=idx.device))
        rotary = (self.rope_cos, self.rope_sin) if self.cfg.positions == "rope" else None
        x = self.drop(x)
        recompute = self.cfg.activation_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, rotary, use_reentrant=False) if recompute else block(x, rotary)
        return self.norm(x)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy in nats; computed in fp32 whatever the autocast dtype.

        It calls hidden_states and the head, not forward: sharded training registers this method as
        a forward of its own (LanguageModel.configure_model), and FSDP's hooks must not run nested.
        """
        hidden = self.hidden_states(idx)
        if self.cfg.loss_chunk_size:
            return chunked_cross_entropy(
                hidden.flatten(0, 1), self.head.weight, targets.flatten(), self.cfg.loss_chunk_size
            )
        logits = self.head(hidden)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
