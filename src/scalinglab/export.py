"""A trained GPT as a Hugging Face model: `scaling-export RUN_DIR --out DIR`, and `load_model`.

The layout is the one `transformers` class that computes exactly what the model computes:
- learned positions + GELU: GPT-2 (`GPT2LMHeadModel`; its Conv1D weights are Linear's transposed,
  biases zero where the model has none, activation "gelu", the exact erf form that F.gelu is);
- rotary positions + GELU: GPT-NeoX (`GPTNeoXForCausalLM`, sequential residual, rotary over the
  whole head). Its query_key_value is laid out [heads, 3, head_dim] where scalinglab's qkv is
  [3, heads, head_dim], and it rotates the two halves of a head where scalinglab rotates
  consecutive pairs: the q and k rows of each head are reordered (even dimensions, then odd), which
  leaves every attention score unchanged;
- masked LM (objective=mlm: bidirectional, embedding_norm, head_transform, learned positions):
  RoBERTa-PreLayerNorm (`RobertaPreLayerNormForMaskedLM`): embeddings LayerNorm, pre-norm blocks,
  the encoder's final LayerNorm, the LM head's dense -> GELU -> LayerNorm and decoder. Its
  token-type embedding (one type) and the biases the model lacks are zeros. RoBERTa numbers
  positions from pad_token_id + 1 and skips each occurrence of the pad id; every scalinglab id is a
  real token (bpe's <|endoftext|> starts every document), so pad_token_id is -1, no id is padding
  and positions run 0..T-1 over the model's own table (transformers warns that -1 is outside the
  vocabulary, as it does for Hub configs that do the same; nn.Embedding reads padding_idx -1 as
  the last row, the mask token, whose lookup gets no gradient if the export is fine-tuned).
Anything else (SwiGLU, rotary or pre-BERT-shape mlm models, fields no layout knows) is refused in
one line: an approximate export would be a different model under the run's name.

Before anything is written the exported model's logits are compared with the model's on random
token ids (fp32, CPU); a difference above TOLERANCE is refused, and the figure goes in README.md.
A checkpoint whose model shape or run_id is not its run record's is refused, as `scaling-eval`
refuses it; so is an --out in a run directory, or a non-empty one unless --force.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from scalinglab.errors import ConfigError

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
TOLERANCE = 1e-4  # largest logit difference an export may have (fp32)
EOT = "<|endoftext|>"  # the bpe tokenizer's id 0, which starts every document
NO_PAD_ID = -1  # RoBERTa's pad_token_id: no token id is padding (module docstring)
MASK = "<mask>"  # the mask token's text in an mlm export's tokenizer (RoBERTa's)
# Why a bidirectional model without BERT's shape has no layout (checked on transformers 5.24).
NO_MLM_LAYOUT = (
    "a bidirectional model without model.embedding_norm and model.head_transform (an mlm run from "
    "before objective=mlm set them) has no exact layout: every masked-LM head in transformers "
    "(RobertaPreLayerNorm, XLM-RoBERTa-XL, Megatron-BERT, ESM) has a dense+GELU+LayerNorm "
    "transform before its decoder, and RobertaPreLayerNorm normalises the embeddings"
)


class ExportRefused(ConfigError):
    """The model has no exact layout; the message says why, in one line."""


def checkpoint_path(path: Path) -> Path:
    """A run directory's final checkpoint, or the .ckpt given."""
    return path / LAST_CHECKPOINT if path.is_dir() else path


def load_model(path: str | Path) -> Any:
    """The trained `GPT` from a run directory (its checkpoints/last.ckpt) or a .ckpt, in eval mode.

    The checkpoint is checked against its sha256, read as data (weights_only=True) and refused
    unless its model shape and run_id are its run record's, as `scaling-eval` reads it. Sharded
    (trainer=fsdp) runs save the whole state dict in one file and compiled runs compile the loss,
    not the module, so every run's keys are the same `model.*`.
    """
    from scalinglab.evaluate import load_model as load_checkpoint

    checkpoint = checkpoint_path(Path(path))
    model, _ = load_checkpoint(checkpoint, run_record(checkpoint))
    return model


def run_record(checkpoint: Path) -> dict[str, Any] | None:
    """The record of the run a checkpoint is in (RUN/checkpoints/NAME.ckpt: RUN/run.json); None
    for a checkpoint outside a run's checkpoints/."""
    from scalinglab.records import read_run

    directory = checkpoint.absolute().parent
    return read_run(directory.parent) if directory.name == "checkpoints" else None


def check_out(out: Path, run: Path, force: bool) -> None:
    """Refuse an --out in a run directory (the run exported, or any holding run.json: an export
    would mix its files with the run's), or a non-empty one unless forced."""
    from scalinglab.records import RUN_FILE

    exported = run.resolve() if run.is_dir() else None
    target = out.resolve()
    for directory in (target, *target.parents):
        if directory == exported or (directory / RUN_FILE).exists():
            raise ConfigError(
                f"--out {out} is in the run directory {directory}: an export goes outside it"
            )
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} is not empty: pass --force to write into it")


# ---- which layout ------------------------------------------------------------------------------


def refusal(config: dict[str, Any]) -> str | None:
    """Why a model config (GPTConfig.to_dict()) has no exact layout; None when it has one."""
    from scalinglab.model import GPTConfig

    if config["mlp"] != "gelu":
        return (
            f"model.mlp={config['mlp']}: the exported layouts (GPT-2, GPT-NeoX, "
            "RobertaPreLayerNorm) have a GELU MLP, and the gated-MLP ones (Llama and its kind) "
            "normalise with RMSNorm, not LayerNorm"
        )
    bert_shape = config.get("embedding_norm") and config.get("head_transform")
    if not config["causal"] and not bert_shape:
        return NO_MLM_LAYOUT
    if not config["causal"] and config["positions"] != "learned":
        return "model.positions=rope under mlm: RobertaPreLayerNorm has learned positions only"
    if config["causal"] and (config.get("embedding_norm") or config.get("head_transform")):
        return (
            "model.embedding_norm or model.head_transform in a causal model: GPT-2 and GPT-NeoX "
            "have neither"
        )
    # A field added after this module may change what the model computes: refused unless it has
    # its default value.
    known = {
        "vocab_size",
        "max_seq_len",
        "d_model",
        "n_layers",
        "n_heads",
        "d_ff",
        "mlp",
        "positions",
        "tie_embeddings",
        "bias",
        "dropout",
        "target_params",
        "loss_chunk_size",
        "activation_checkpointing",
        "causal",  # False: the RobertaPreLayerNorm layout
        "embedding_norm",  # its embeddings LayerNorm
        "head_transform",  # its LM head's dense -> GELU -> LayerNorm
        "parametrization",  # its multipliers folded into the weights (folded_state_dict)
        "base_width",
        "base_depth",
    }
    defaults = {f.name: f.default for f in fields(GPTConfig)}
    for key, value in config.items():
        if key not in known and value != defaults.get(key):
            return f"model.{key}={value}: no exported layout is known to represent it exactly"
    return None


def layout(config: dict[str, Any]) -> str:
    """'gpt2', 'neox' or 'roberta'; ExportRefused when none computes what the model computes."""
    if why := refusal(config):
        raise ExportRefused(why)
    if not config["causal"]:
        return "roberta"
    return "gpt2" if config["positions"] == "learned" else "neox"


# ---- weights -----------------------------------------------------------------------------------


def folded_state_dict(model: Any) -> dict[str, Any]:
    """The model's weights with its parametrization's multipliers folded in, so that they compute
    the same under sp's rules, which the layouts follow (attention scale 1/sqrt(head_dim), no
    branch or logit multipliers). Each fold is exact (up to rounding):
    - muP's attention scale 1/head_dim: the q rows of qkv times sqrt(head_dim)/head_dim (rotary
      rotation is linear, so scaling q before it is scaling it after);
    - CompleteP's residual multiplier: each branch's output projection (weight and bias);
    - muP's logit multiplier 1/m: the weight and bias of the LayerNorm whose output feeds the head
      alone (the head itself may be tied to the embedding): the head transform's, else the final
      one."""
    import math

    cfg = model.cfg
    state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    if cfg.attention_scale is not None:
        q_scale = cfg.attention_scale * math.sqrt(cfg.d_model // cfg.n_heads)
        for i in range(cfg.n_layers):
            for kind in ("weight", "bias"):
                if (key := f"blocks.{i}.attn.qkv.{kind}") in state:
                    state[key][: cfg.d_model] *= q_scale
    scales = {
        f"blocks.{i}.{branch}.": cfg.residual_multiplier
        for i in range(cfg.n_layers)
        for branch in ("attn.proj", "mlp.down")
    } | {("head_transform.norm." if cfg.head_transform else "norm."): cfg.output_multiplier}
    for prefix, scale in scales.items():
        for kind in ("weight", "bias"):
            if prefix + kind in state:
                state[prefix + kind] *= scale
    return state


def _bias(state: dict[str, Any], module: str, size: int) -> Any:
    """A module's bias, or zeros where it has none (the layouts always have one)."""
    import torch

    return state.get(f"{module}.bias", torch.zeros(size))


def gpt2_state_dict(state: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """GPT2LMHeadModel's state dict from scalinglab's (folded): Conv1D weights are (in, out),
    Linear's transposed."""
    out = {"transformer.wte.weight": state["embed.weight"]}
    out["transformer.wpe.weight"] = state["pos_embed.weight"]
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for name, norm in (("ln_1", "norm1"), ("ln_2", "norm2")):
            out[theirs + name + ".weight"] = state[ours + norm + ".weight"]
            out[theirs + name + ".bias"] = _bias(state, ours + norm, cfg.d_model)
        linears = {
            "attn.c_attn": "attn.qkv",
            "attn.c_proj": "attn.proj",
            "mlp.c_fc": "mlp.up",
            "mlp.c_proj": "mlp.down",
        }
        for name, linear in linears.items():
            weight = state[ours + linear + ".weight"]
            out[theirs + name + ".weight"] = weight.t()
            out[theirs + name + ".bias"] = _bias(state, ours + linear, weight.shape[0])
    out["transformer.ln_f.weight"] = state["norm.weight"]
    out["transformer.ln_f.bias"] = _bias(state, "norm", cfg.d_model)
    out["lm_head.weight"] = state["head.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def neox_qkv(tensor: Any, n_heads: int) -> Any:
    """scalinglab's qkv rows ([3, heads, head_dim]) in GPT-NeoX's order ([heads, 3, head_dim]),
    the q and k rows of each head reordered from consecutive rotary pairs to halves."""
    import torch

    head_dim = tensor.shape[0] // 3 // n_heads
    t = tensor.reshape(3, n_heads, head_dim, *tensor.shape[1:])
    halves = torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))
    t = torch.stack((t[0][:, halves], t[1][:, halves], t[2]))
    return t.transpose(0, 1).reshape(tensor.shape)


def neox_state_dict(state: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """GPTNeoXForCausalLM's state dict from scalinglab's (folded)."""
    out = {"gpt_neox.embed_in.weight": state["embed.weight"]}
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        for name, norm in (("input_layernorm", "norm1"), ("post_attention_layernorm", "norm2")):
            out[theirs + name + ".weight"] = state[ours + norm + ".weight"]
            out[theirs + name + ".bias"] = _bias(state, ours + norm, cfg.d_model)
        qkv = state[ours + "attn.qkv.weight"]
        out[theirs + "attention.query_key_value.weight"] = neox_qkv(qkv, cfg.n_heads)
        out[theirs + "attention.dense.weight"] = state[ours + "attn.proj.weight"]
        if cfg.bias:  # GPT-NeoX's attention_bias follows the model's
            qkv_bias = state[ours + "attn.qkv.bias"]
            out[theirs + "attention.query_key_value.bias"] = neox_qkv(qkv_bias, cfg.n_heads)
            out[theirs + "attention.dense.bias"] = state[ours + "attn.proj.bias"]
        for name, linear in (("dense_h_to_4h", "mlp.up"), ("dense_4h_to_h", "mlp.down")):
            weight = state[ours + linear + ".weight"]
            out[theirs + f"mlp.{name}.weight"] = weight
            out[theirs + f"mlp.{name}.bias"] = _bias(state, ours + linear, weight.shape[0])
    out["gpt_neox.final_layer_norm.weight"] = state["norm.weight"]
    out["gpt_neox.final_layer_norm.bias"] = _bias(state, "norm", cfg.d_model)
    out["lm_head.weight"] = state["head.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def roberta_state_dict(state: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """RobertaPreLayerNormForMaskedLM's state dict from scalinglab's (folded)."""
    import torch

    d = cfg.d_model
    base = "roberta_prelayernorm."
    out = {
        base + "embeddings.word_embeddings.weight": state["embed.weight"],
        # pad_token_id -1: position t is row t, the model's table as it is (module docstring).
        base + "embeddings.position_embeddings.weight": state["pos_embed.weight"],
        base + "embeddings.token_type_embeddings.weight": torch.zeros(1, d),
    }
    norms = {"embeddings.LayerNorm": "embed_norm", "LayerNorm": "norm"}
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"encoder.layer.{i}."
        norms |= {theirs + "attention.LayerNorm": ours + "norm1"}
        norms |= {theirs + "intermediate.LayerNorm": ours + "norm2"}
        qkv_bias = _bias(state, ours + "attn.qkv", 3 * d)
        for name, weight, bias in zip(
            ("query", "key", "value"),
            state[ours + "attn.qkv.weight"].chunk(3),
            qkv_bias.chunk(3),
            strict=True,
        ):
            out[base + theirs + f"attention.self.{name}.weight"] = weight
            out[base + theirs + f"attention.self.{name}.bias"] = bias
        linears = {
            "attention.output.dense": "attn.proj",
            "intermediate.dense": "mlp.up",
            "output.dense": "mlp.down",
        }
        for name, linear in linears.items():
            weight = state[ours + linear + ".weight"]
            out[base + theirs + name + ".weight"] = weight
            out[base + theirs + name + ".bias"] = _bias(state, ours + linear, weight.shape[0])
    for name, norm in norms.items():
        out[base + name + ".weight"] = state[norm + ".weight"]
        out[base + name + ".bias"] = _bias(state, norm, d)
    out["lm_head.dense.weight"] = state["head_transform.dense.weight"]
    out["lm_head.dense.bias"] = _bias(state, "head_transform.dense", d)
    out["lm_head.layer_norm.weight"] = state["head_transform.norm.weight"]
    out["lm_head.layer_norm.bias"] = _bias(state, "head_transform.norm", d)
    out["lm_head.decoder.weight"] = state["head.weight"]
    # scalinglab's head has no bias; RoBERTa's decoder bias is lm_head.bias, tied.
    out["lm_head.decoder.bias"] = out["lm_head.bias"] = torch.zeros(cfg.vocab_size)
    return {k: v.contiguous() for k, v in out.items()}


def hf_model(model: Any, eot_id: int | None = None, mask_token_id: int | None = None) -> Any:
    """The model as a transformers model of its layout, in eval mode (fp32, CPU). mask_token_id:
    an mlm model's mask token (run.json data.mask_token_id; the model's last id if not given)."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = model.cfg
    chosen = layout(cfg.to_dict())
    special = {"bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": None}
    if chosen == "roberta":
        from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM

        config = RobertaPreLayerNormConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.d_model,
            num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads,
            intermediate_size=cfg.d_ff,
            hidden_act="gelu",  # erf GELU, as F.gelu (the LM head's gelu is the same)
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            max_position_embeddings=cfg.max_seq_len,
            type_vocab_size=1,
            layer_norm_eps=1e-5,  # nn.LayerNorm's
            tie_word_embeddings=cfg.tie_embeddings,
            is_decoder=False,  # bidirectional attention
            bos_token_id=eot_id,
            eos_token_id=eot_id,
            pad_token_id=NO_PAD_ID,
            mask_token_id=cfg.vocab_size - 1 if mask_token_id is None else mask_token_id,
        )
        hf = RobertaPreLayerNormForMaskedLM(config)
        state = roberta_state_dict(folded_state_dict(model), cfg)
    elif chosen == "gpt2":
        config = GPT2Config(
            vocab_size=cfg.vocab_size,
            n_positions=cfg.max_seq_len,
            n_embd=cfg.d_model,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_inner=cfg.d_ff,
            activation_function="gelu",  # erf GELU, as F.gelu; GPT-2's default is the tanh form
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            layer_norm_epsilon=1e-5,  # nn.LayerNorm's
            tie_word_embeddings=cfg.tie_embeddings,
            **special,
        )
        hf, state = GPT2LMHeadModel(config), gpt2_state_dict(folded_state_dict(model), cfg)
    else:
        config = GPTNeoXConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.d_model,
            num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads,
            intermediate_size=cfg.d_ff,
            hidden_act="gelu",
            max_position_embeddings=cfg.max_seq_len,
            # transformers 4.x's names, which 5.x reads into rope_parameters.
            rotary_pct=1.0,
            rotary_emb_base=10000.0,  # scalinglab.model.rotary_tables' base
            use_parallel_residual=False,
            attention_bias=cfg.bias,
            attention_dropout=cfg.dropout,
            hidden_dropout=cfg.dropout,
            layer_norm_eps=1e-5,
            tie_word_embeddings=cfg.tie_embeddings,
            **special,
        )
        hf, state = GPTNeoXForCausalLM(config), neox_state_dict(folded_state_dict(model), cfg)
    hf.load_state_dict(state, strict=True)
    return hf.eval()


def max_logit_difference(model: Any, hf: Any, seed: int = 0) -> float:
    """Largest |logit difference| between the model and its export on random token ids."""
    import torch

    cfg = model.cfg
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(cfg.vocab_size, (2, min(cfg.max_seq_len, 64)), generator=generator)
    with torch.no_grad():
        return float((model.eval()(ids) - hf(ids).logits).abs().max())


# ---- tokenizer ---------------------------------------------------------------------------------


def mask_token(tokenizer: Any, mask_token_id: int | None) -> tuple[dict[str, str], str]:
    """PreTrainedTokenizerFast's mask_token keyword for a `tokenizers` tokenizer (it adds <mask> at
    the next id) where that id is mask_token_id (None: not an mlm run), and a note saying so."""
    if mask_token_id is None:
        return {}, ""
    if tokenizer.get_vocab_size() != mask_token_id:
        return {}, (
            f"; no {MASK} token: the tokenizer has {tokenizer.get_vocab_size()} ids, the mask "
            f"token's id is {mask_token_id} (config.json mask_token_id)"
        )
    return {"mask_token": MASK}, f"; {MASK} is the mask token (id {mask_token_id})"


def byte_tokenizer() -> Any:
    """scalinglab's `bytes` tokenizer as a `tokenizers` one: token id = byte value.

    GPT-2's byte-level alphabet maps each byte to one character; with no merges every byte is one
    token, and the ByteLevel decoder maps the characters back to bytes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {character: byte for byte, character in bytes_to_unicode().items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def hf_tokenizer(data: dict[str, Any]) -> tuple[Any | None, str]:
    """The run's tokenizer as a PreTrainedTokenizerFast (None where there is no equivalent), and a
    sentence for the README saying which."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    name = data.get("tokenizer")
    mask_token_id = data.get("mask_token_id")
    if name == "bytes":
        tokenizer = byte_tokenizer()
        mask, mask_note = mask_token(tokenizer, mask_token_id)
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **mask), (
            f"bytes: token id = byte value (a byte-level tokenizer with no merges){mask_note}"
        )
    if name == "bpe":
        path = Path(data.get("cache_path", "")) / "tokenizer.json"
        if not path.is_file():
            return None, f"none written: the run's bpe tokenizer ({path}) is gone"
        tokenizer = Tokenizer.from_file(str(path))
        # scalinglab starts every document with <|endoftext|> (id 0): so does this tokenizer.
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{EOT} $A", special_tokens=[(EOT, tokenizer.token_to_id(EOT))]
        )
        mask, mask_note = mask_token(tokenizer, mask_token_id)
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, bos_token=EOT, eos_token=EOT, **mask
        )
        return (
            wrapped,
            f"bpe: the run's own tokenizer.json; {EOT} (id 0) starts each text{mask_note}",
        )
    if name == "gpt2":
        return None, (
            "none written: the run used tiktoken's gpt2 encoding, which GPT-2's own tokenizer "
            "(AutoTokenizer.from_pretrained('gpt2')) reproduces; documents start with "
            f"{EOT} (id 50256)"
        )
    if not data:
        return None, "none: no run record beside the checkpoint names the run's tokenizer"
    return None, f"none: the run's data ({data.get('name')}) are token ids, not text"


def eot_id(data: dict[str, Any]) -> int | None:
    """The id that starts each document, where the tokenizer has one."""
    return {"bpe": 0, "gpt2": 50256}.get(data.get("tokenizer"))


# ---- the export --------------------------------------------------------------------------------


def export(run_dir_or_ckpt: str | Path, out_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Write out_dir (config.json, model.safetensors, tokenizer files, README.md) for the run's
    model; returns what README.md says (layout, max_logit_difference, tokenizer). A non-empty
    out_dir is written into only when forced (files of the same names replaced)."""
    from scalinglab.evaluate import load_model as load_checkpoint

    check_out(Path(out_dir), Path(run_dir_or_ckpt), force)
    checkpoint = checkpoint_path(Path(run_dir_or_ckpt))
    record = run_record(checkpoint)
    model, _ = load_checkpoint(checkpoint, record)
    layout(model.cfg.to_dict())  # refuse before reading anything else
    data = (record or {}).get("data") or {}
    tokenizer, tokenizer_note = hf_tokenizer(data)
    return export_model(
        model,
        out_dir,
        tokenizer,
        tokenizer_note,
        eot_id(data),
        str(checkpoint),
        data.get("mask_token_id"),
    )


def export_model(
    model: Any,
    out_dir: str | Path,
    tokenizer: Any | None = None,
    tokenizer_note: str = "none given",
    eot: int | None = None,
    source: str = "a GPT module",
    mask_token_id: int | None = None,
) -> dict[str, Any]:
    """Export a GPT module (fp32, on the CPU, as load_model gives it); see `export`."""
    hf = hf_model(model, eot, mask_token_id)
    difference = max_logit_difference(model, hf)
    if not difference <= TOLERANCE:
        raise ExportRefused(
            f"the {type(hf).__name__} export's logits differ from the model's by "
            f"{difference:.3g} (more than {TOLERANCE}): nothing written"
        )
    out = Path(out_dir)
    hf.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    summary = {
        "layout": type(hf).__name__,
        "max_logit_difference": difference,
        "tokenizer": tokenizer_note,
    }
    auto = "AutoModelForCausalLM" if model.cfg.causal else "AutoModelForMaskedLM"
    (out / "README.md").write_text(
        f"# {out.name}\n\nExported by `scaling-export` from {source}.\n\n"
        f"- layout: `{summary['layout']}` (`{auto}.from_pretrained`)\n"
        f"- largest logit difference from scalinglab's model (fp32, random ids): {difference:.3g}\n"
        f"- tokenizer: {tokenizer_note}\n"
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaling-export",
        description="Write a run's trained model as a Hugging Face transformers directory "
        "(config.json, model.safetensors, the tokenizer where it has an equivalent).",
    )
    parser.add_argument("run", type=Path, help="a run's directory, or a .ckpt")
    parser.add_argument(
        "--out", type=Path, required=True, help="the directory to write (outside any run's)"
    )
    parser.add_argument(
        "--force", action="store_true", help="write into --out even if it is not empty"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from scalinglab.records import DamagedRecord

    args = build_parser().parse_args(argv)
    try:
        summary = export(args.run, args.out, args.force)
    except (ConfigError, DamagedRecord, OSError) as error:
        print(f"scaling-export: error: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {summary['layout']}, largest logit difference "
        f"{summary['max_logit_difference']:.3g}; tokenizer: {summary['tokenizer']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
