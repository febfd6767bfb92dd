"""A GPT decoder, small enough to read in one sitting.

Pre-norm Transformer blocks, causal self-attention through `scaled_dot_product_attention`, GELU or
SwiGLU MLP, learned or rotary positions, tied or untied embeddings, no biases by default.

Masked language modelling (objective=mlm) makes it BERT-shaped (RoBERTa with pre-norm blocks, as
`RobertaPreLayerNormForMaskedLM`): bidirectional attention (`causal=False`), a LayerNorm over the
token + position embeddings (`embedding_norm`), and BERT's head transform (`head_transform`):
dense d -> d, exact GELU, LayerNorm, before the (tied) decoder, which has no bias (RoBERTa's is
exported as zeros). Both count as non-embedding parameters; the transform's dense is a matmul of
the FLOP count and a hidden matrix under muP (a d -> d map like the blocks'), and muP's logit
multiplier scales its output, the decoder's input.

Shape and cost are computed from the config alone (`GPTConfig.n_params`, `.flops_per_token`), so a
sweep can size models and budgets before building them; a test checks the formulas against the
module's own parameters.

Size rule for `target_params` and the named ladder in `conf/model/`: heads of 64 dimensions (32
below d_model 256), an aspect ratio d_model / n_layers near 64 (Kaplan et al. 2020 found loss flat
over a wide band of aspect ratios around this) and at least 2 layers, d_ff = 4 d_model for GELU and
the parameter-matched 8/3 d_model for SwiGLU.

Parametrizations (`parametrization`; shapes, parameter counts and FLOPs are the same under each):
- sp: the standard one (GPT-2 / nanoGPT): std 0.02 everywhere, output projections 0.02/sqrt(2L),
  attention scale 1/sqrt(head_dim), one learning rate.
- mup: muP (Yang et al. 2022, Tensor Programs V, Table 3 in the mup package's multiplier form), with
  m = d_model / base_width: hidden matrices (the blocks' Linear weights) init std / sqrt(m) and Adam
  lr / m; embeddings, norms, biases and the readout keep init and lr; logits multiplied by 1 / m;
  attention scale 1/head_dim. At base_width it is sp but for the attention scale. The readout is not
  zero-initialised: tied to the embedding it cannot be, and std 0.02 times 1/m already sends the
  initial logits to 0 as the width grows.
- completep: muP plus CompleteP's depth rule (Dey et al. 2025, alpha = 1): each residual branch
  multiplied by base_depth / n_layers, output projections initialised for base_depth layers rather
  than n_layers, and AdamW eps and weight decay of hidden matrices rescaled (LanguageModel's
  optimizer groups read the multipliers from GPTConfig).
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
INIT_STD = 0.02  # every weight's init std under sp (GPT-2)
PARAMETRIZATIONS = ("sp", "mup", "completep")
ASPECT_RATIO = 64  # d_model / n_layers of the size rule


DEFAULT_SHAPE = {"d_model": 256, "n_layers": 4, "n_heads": 4}  # no shape and no target_params


@dataclass
class GPTConfig:
    """A model's shape and options. Masked language modelling (objective=mlm) is `causal=False`:
    attention sees every position of the window, and vocab_size holds one more id than the data's
    tokens, the mask token, whose id is the data's vocabulary size (run.json data.mask_token_id;
    ordinarily vocab_size - 1). The mask token is an ordinary row of the embedding (and of the tied
    head): counted in n_params, never a target."""

    vocab_size: int = 256
    max_seq_len: int = 256
    # None: the size rule's shape if target_params is set, else DEFAULT_SHAPE's.
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    d_ff: int | None = None  # None: 4 d_model (gelu) or 8/3 d_model rounded to 64 (swiglu)
    mlp: str = "gelu"  # "gelu" | "swiglu"
    positions: str = "learned"  # "learned" | "rope"
    tie_embeddings: bool = True
    bias: bool = False
    dropout: float = 0.0
    # If set, d_model / n_layers / n_heads come from the size rule instead (non-embedding count;
    # a float, as a config writes it: 2e6).
    target_params: float | None = None
    # If set, the loss takes the logits this many tokens at a time and never holds all of them
    # (scalinglab.ops.chunked_cross_entropy): with a large vocabulary they dominate memory.
    loss_chunk_size: int | None = None
    # Recompute each block's activations in the backward pass instead of keeping them: less memory
    # for about one more forward pass of compute per step; the results are the same.
    activation_checkpointing: bool = False
    # False: bidirectional attention, for masked language modelling (objective=mlm).
    causal: bool = True
    # BERT's shape (objective=mlm): a LayerNorm after the token (+ position) embeddings, and a
    # dense -> GELU -> LayerNorm transform between the final norm and the output head.
    embedding_norm: bool = False
    head_transform: bool = False
    # sp | mup | completep (module docstring). The widths and depth the base hyperparameters are
    # tuned at: 64 and 2 are the smallest shapes of the size rule, the cheap proxy a sweep tunes.
    parametrization: str = "sp"
    base_width: int = 64
    base_depth: int = 2

    def __post_init__(self) -> None:
        if self.target_params is not None:
            if self.target_params <= 0:
                raise ConfigError(f"model.target_params must be positive, got {self.target_params}")
            shape = shape_for_params(self.target_params, mlp=self.mlp, bias=self.bias)
            ruled = dict(zip(("d_model", "n_layers", "n_heads"), shape, strict=True))
            ruled["d_ff"] = default_d_ff(ruled["d_model"], self.mlp)
        else:
            ruled = {**DEFAULT_SHAPE, "d_ff": None}
        for key, value in ruled.items():
            given = getattr(self, key)
            if given is None:
                setattr(self, key, value)
            elif self.target_params is not None and given != value:
                # Both set the shape; it silently trained the rule's (width 32 for d_model=999).
                raise ConfigError(
                    f"model.target_params={self.target_params:g} and model.{key}={given} both "
                    f"set the shape (the size rule gives {key}={value}): give one; "
                    "target_params goes with model=gpt, whose shape is unset"
                )
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
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(
                f"model.parametrization must be one of {', '.join(PARAMETRIZATIONS)}, "
                f"got {self.parametrization!r}"
            )
        for key in ("base_width", "base_depth"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")

    # ---- parametrization multipliers (1.0 under sp) -------------------------------------------
    @property
    def width_multiplier(self) -> float:
        """muP's m_N = d_model / base_width; 1 under sp, so every rule below is the identity."""
        return 1.0 if self.parametrization == "sp" else self.d_model / self.base_width

    @property
    def depth_multiplier(self) -> float:
        """CompleteP's m_L = n_layers / base_depth; 1 unless completep."""
        return self.n_layers / self.base_depth if self.parametrization == "completep" else 1.0

    @property
    def residual_multiplier(self) -> float:
        """CompleteP's branch multiplier m_L^-alpha with alpha = 1 (Dey et al. 2025, eq. 1)."""
        return 1.0 / self.depth_multiplier

    @property
    def output_multiplier(self) -> float:
        """muP's logit multiplier 1 / m_N (the mup package's MuReadout output_mult / width_mult)."""
        return 1.0 / self.width_multiplier

    @property
    def attention_scale(self) -> float | None:
        """1/head_dim under muP (TP V: q and k become correlated in training, so q.k grows like
        head_dim); None under sp: SDPA's own 1/sqrt(head_dim)."""
        return None if self.parametrization == "sp" else self.n_heads / self.d_model

    @property
    def hidden_init_std(self) -> float:
        """Init std of the blocks' matrices: variance 1/fan_in in muP, i.e. 0.02 / sqrt(m_N)."""
        return INIT_STD / math.sqrt(self.width_multiplier)

    @property
    def residual_init_std(self) -> float:
        """Init std of the projections into the residual stream (attn.proj, mlp.down): GPT-2's
        1/sqrt(2 L), with L = base_depth under completep, whose branch multiplier already scales
        depth (CompleteP Table 1: hidden init variance does not depend on depth)."""
        depth = self.base_depth if self.parametrization == "completep" else self.n_layers
        return self.hidden_init_std / math.sqrt(2 * depth)

    @property
    def hidden_lr_multiplier(self) -> float:
        """Adam lr of hidden matrices: muP's 1/m_N times CompleteP's m_L^(alpha-1), which is 1 at
        alpha = 1 (Dey et al. 2025, Table 1)."""
        return 1.0 / self.width_multiplier

    @property
    def hidden_weight_decay_multiplier(self) -> float:
        """CompleteP Table 1: AdamW weight decay of hidden matrices times m_N, so that the decay
        per step, lr x weight_decay, does not change with width. muP (the mup package) leaves it."""
        return self.width_multiplier if self.parametrization == "completep" else 1.0

    @property
    def hidden_eps_multiplier(self) -> float:
        """CompleteP Table 1: AdamW eps of hidden matrices times 1 / (m_N m_L^alpha), the scale of
        their gradients, so that eps stays as small beside them at every size."""
        if self.parametrization != "completep":
            return 1.0
        return 1.0 / (self.width_multiplier * self.depth_multiplier)

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
        """Kaplan et al.'s N: every parameter of the blocks, the final norm, and the embedding
        norm and head transform where the model has them (norms and a matmul, not lookups)."""
        d, f, b = self.d_model, self.d_ff, int(self.bias)
        norm = d * (1 + b)
        attn = 4 * d * d + b * 4 * d
        mlp = 3 * d * f + b * (2 * f + d) if self.mlp == "swiglu" else 2 * d * f + b * (f + d)
        extra = norm * self.embedding_norm + (d * d + b * d + norm) * self.head_transform
        return self.n_layers * (2 * norm + attn + mlp) + norm + extra

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
        Under masked language modelling (causal=False) the same count holds: the forward and
        backward run over every position, though the loss takes only the masked 15%.
        """
        seq_len = self.max_seq_len if seq_len is None else seq_len
        mlp_matrices = 3 if self.mlp == "swiglu" else 2
        block_weights = 4 * self.d_model**2 + mlp_matrices * self.d_model * self.d_ff
        head_weights = (self.vocab_size + self.d_model * self.head_transform) * self.d_model
        matmul_weights = self.n_layers * block_weights + head_weights
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


def shape_for_params(target: float, mlp: str = "gelu", bias: bool = False) -> tuple[int, int, int]:
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


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """The blocks' and the head transform's Linear weights: muP's hidden matrices (width to width),
    whose init and Adam lr scale with width (embeddings, norms, biases, the readout are not)."""
    return name.startswith(("blocks.", "head_transform.")) and p.dim() >= 2


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
        self.n_heads, self.dropout, self.scale = cfg.n_heads, cfg.dropout, cfg.attention_scale
        self.causal = cfg.causal
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
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, is_causal=self.causal, scale=self.scale
        )
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
        self.residual = cfg.residual_multiplier  # a plain float: FSDP and compile see a constant

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        x = x + self.residual * self.drop(self.attn(self.norm1(x), rotary))
        return x + self.residual * self.drop(self.mlp(self.norm2(x)))


class HeadTransform(nn.Module):
    """BERT's transform before the output head: dense d -> d, exact GELU, LayerNorm."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(x)))


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
        self.embed_norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias) if cfg.embedding_norm else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.head_transform = HeadTransform(cfg) if cfg.head_transform else None
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            # GPT-2's residual scaling: each block adds two projections into the residual stream.
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=cfg.residual_init_std)
            elif is_hidden_matrix(name, p):
                # muP's variance 1/fan_in: the N(0, 0.02) sample rescaled, so sp draws the same
                # random numbers as before the parametrizations existed.
                with torch.no_grad():
                    p.mul_(cfg.hidden_init_std / INIT_STD)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, vocab_size)."""
        return self.head(self.head_input(idx))

    def head_input(self, idx: torch.Tensor) -> torch.Tensor:
        """The final hidden states (through the head transform, if any) times muP's output
        multiplier: scaling the head's input rather than its logits gives the chunked loss, which
        takes the head's weight, the same logits."""
        x = self.hidden_states(idx)
        if self.head_transform is not None:
            x = self.head_transform(x)
        return x * self.cfg.output_multiplier

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> the final normalised hidden states (B, T, d_model)."""
        T = idx.shape[1]
        if self.cfg.max_seq_len < T:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
        x = self.embed(idx)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(T, device=idx.device))
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        rotary = (self.rope_cos, self.rope_sin) if self.cfg.positions == "rope" else None
        x = self.drop(x)
        recompute = self.cfg.activation_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, rotary, use_reentrant=False) if recompute else block(x, rotary)
        return self.norm(x)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy in nats; computed in fp32 at least, whatever the dtype.

        It calls head_input and the head, not forward: sharded training registers this method as
        a forward of its own (LanguageModel.configure_model), and FSDP's hooks must not run nested.
        """
        hidden = self.head_input(idx)
        if self.cfg.loss_chunk_size:
            return chunked_cross_entropy(
                hidden.flatten(0, 1), self.head.weight, targets.flatten(), self.cfg.loss_chunk_size
            )
        logits = self.head(hidden)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp64 stays fp64
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
