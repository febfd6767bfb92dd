"""`scaling-export` and `scalinglab.load_model`: a trained GPT in transformers, computing the same."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    pipeline,
)

import scalinglab  # noqa: E402
from scalinglab import export  # noqa: E402
from scalinglab.callbacks import save_verified  # noqa: E402
from scalinglab.data.tokenizer import BPETokenizer, ByteTokenizer  # noqa: E402
from scalinglab.errors import ConfigError  # noqa: E402
from scalinglab.export import (  # noqa: E402
    NO_MLM_LAYOUT,
    ExportRefused,
    export_model,
    hf_tokenizer,
    main,
    refusal,
)
from scalinglab.model import GPT, GPTConfig  # noqa: E402
from scalinglab.module import LanguageModel  # noqa: E402
from scalinglab.train import train  # noqa: E402
from tests.conftest import TINY_TRAINING, compose_train, foreign_checkpoint  # noqa: E402

TOLERANCE = 1e-4
TEXT = "the quick brown fox jumps over the lazy dog. "


def random_gpt(**shape) -> GPT:
    """A small GPT with every parameter drawn at std 0.3: activations of order one, where a wrong
    activation (GELU's tanh form), pairing or layout shows in the logits (at GPT-2's 0.02 init they
    hardly move)."""
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=97, max_seq_len=32, d_model=64, n_layers=2, n_heads=2, **shape)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def greedy(model: GPT, ids: torch.Tensor, n: int) -> torch.Tensor:
    """scalinglab's own greedy continuation, one whole forward pass per token."""
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat((ids, model(ids)[:, -1:].argmax(-1)), dim=1)
    return ids


def assert_same_model(model: GPT, out: Path) -> torch.nn.Module:
    """The export in `out` loads with AutoModelForCausalLM, has scalinglab's logits (within 1e-4,
    fp32) and generates scalinglab's greedy tokens (through its cache, position by position)."""
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(
        model.cfg.vocab_size, (3, model.cfg.max_seq_len), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        difference = (hf(ids).logits - model(ids)).abs().max().item()
    assert difference <= TOLERANCE, difference
    prompt = ids[:1, :8]
    generated = hf.generate(
        prompt, max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(prompt)
    )
    assert torch.equal(generated, greedy(model, prompt, 6))
    return hf


@pytest.mark.parametrize(
    "shape, layout",
    [
        ({}, "GPT2LMHeadModel"),
        ({"tie_embeddings": False, "bias": True}, "GPT2LMHeadModel"),
        ({"bias": True}, "GPT2LMHeadModel"),
        ({"positions": "rope"}, "GPTNeoXForCausalLM"),
        ({"positions": "rope", "tie_embeddings": False, "bias": True}, "GPTNeoXForCausalLM"),
        # muP's attention scale and logit multiplier, CompleteP's branch multiplier, folded in.
        ({"parametrization": "mup", "base_width": 32}, "GPT2LMHeadModel"),
        ({"parametrization": "mup", "base_width": 16, "tie_embeddings": False}, "GPT2LMHeadModel"),
        (
            {"parametrization": "completep", "base_width": 32, "base_depth": 1, "bias": True},
            "GPT2LMHeadModel",
        ),
        ({"parametrization": "mup", "base_width": 32, "positions": "rope"}, "GPTNeoXForCausalLM"),
        (
            {
                "parametrization": "completep",
                "base_width": 16,
                "base_depth": 1,
                "positions": "rope",
                "bias": True,
            },
            "GPTNeoXForCausalLM",
        ),
    ],
)
def test_each_layout_loads_in_transformers_with_the_same_logits_and_generates(
    tmp_path: Path, shape: dict, layout: str
) -> None:
    model = random_gpt(**shape)
    summary = export_model(model, tmp_path / "hf")
    assert summary["layout"] == layout and summary["max_logit_difference"] <= TOLERANCE
    assert {"config.json", "model.safetensors", "README.md"} <= {
        p.name for p in (tmp_path / "hf").iterdir()
    }
    hf = assert_same_model(model, tmp_path / "hf")
    assert type(hf).__name__ == layout
    assert hf.config.tie_word_embeddings == model.cfg.tie_embeddings


MLM_SHAPE = {"causal": False, "embedding_norm": True, "head_transform": True}


def assert_same_masked_lm(model: GPT, out: Path, mask_token_id: int) -> torch.nn.Module:
    """The export in `out` loads with AutoModelForMaskedLM and has scalinglab's logits (within
    1e-4, fp32) on random ids, a row of mask tokens among them: RoBERTa numbers positions around
    its pad id, and no id may shift them."""
    hf = AutoModelForMaskedLM.from_pretrained(out).eval()
    cfg = model.cfg
    ids = torch.randint(
        cfg.vocab_size, (3, cfg.max_seq_len), generator=torch.Generator().manual_seed(1)
    )
    ids[0, ::2] = mask_token_id
    with torch.no_grad():
        difference = (hf(ids).logits - model(ids)).abs().max().item()
    assert difference <= TOLERANCE, difference
    assert hf.config.mask_token_id == mask_token_id and not hf.config.is_decoder
    return hf


@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"tie_embeddings": False},
        {"bias": True},
        {"tie_embeddings": False, "bias": True},
        # muP's attention scale, the logit multiplier after the head transform, CompleteP's
        # branch multiplier: folded in.
        {"parametrization": "mup", "base_width": 16},
        {"parametrization": "completep", "base_width": 32, "base_depth": 1, "bias": True},
    ],
)
def test_masked_lm_exports_to_roberta_prelayernorm_with_the_same_logits(
    tmp_path: Path, shape: dict
) -> None:
    model = random_gpt(**MLM_SHAPE, **shape)
    summary = export_model(model, tmp_path / "hf")
    assert summary["layout"] == "RobertaPreLayerNormForMaskedLM"
    assert summary["max_logit_difference"] <= TOLERANCE
    assert "AutoModelForMaskedLM" in (tmp_path / "hf" / "README.md").read_text()
    hf = assert_same_masked_lm(model, tmp_path / "hf", model.cfg.vocab_size - 1)
    assert hf.config.tie_word_embeddings == model.cfg.tie_embeddings


def test_an_export_whose_logits_differ_is_refused_and_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "neox_qkv", lambda tensor, n_heads: tensor)  # pairing forgotten
    with pytest.raises(ExportRefused, match="GPTNeoXForCausalLM export's logits differ"):
        export_model(random_gpt(positions="rope"), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_what_no_layout_represents_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    base = GPTConfig(d_model=64, n_heads=2).to_dict()
    assert refusal(base) is None
    assert "model.mlp=swiglu" in refusal({**base, "mlp": "swiglu"})
    # mlm from before BERT's shape; rotary mlm; BERT's modules in a causal model.
    assert refusal({**base, "causal": False}) == NO_MLM_LAYOUT
    with pytest.raises(ExportRefused, match="bidirectional"):
        export_model(GPT(GPTConfig(d_model=64, n_heads=2, causal=False)), tmp_path / "mlm")
    bert = {**base, "causal": False, "embedding_norm": True, "head_transform": True}
    assert refusal(bert) is None
    assert refusal({**bert, "positions": "rope"}) == (
        "model.positions=rope under mlm: RobertaPreLayerNorm has learned positions only"
    )
    assert "GPT-2 and GPT-NeoX have neither" in refusal({**base, "head_transform": True})
    assert "GPT-2 and GPT-NeoX have neither" in refusal({**base, "embedding_norm": True})
    # A field added later, until export knows what it does.
    assert refusal({**base, "new_field": 1}) == (
        "model.new_field=1: no exported layout is known to represent it exactly"
    )

    # Through the command: exit 2, one line, nothing written.
    module = LanguageModel(model={**base, "mlp": "swiglu"}, optimizer={}, scheduler={})
    checkpoint = tmp_path / "swiglu.ckpt"
    save_verified(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "global_step": 0,
        },
        checkpoint,
    )
    assert main([str(checkpoint), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scaling-export: error: model.mlp=swiglu") and "\n" not in err
    assert not (tmp_path / "hf").exists()


def test_byte_tokenizer_gives_scalinglab_byte_ids(tmp_path: Path) -> None:
    tokenizer, note = hf_tokenizer({"tokenizer": "bytes"})
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "héllo,  wörld\n\t🙂 <|endoftext|> ünïcode"
    ids = loaded(text).input_ids
    assert ids == ByteTokenizer().encode([text.encode()])[0].tolist()
    assert loaded.decode(ids) == text
    # An mlm run's: <mask> after the bytes, at the mask token's id; refused where ids have a gap.
    masked, note = hf_tokenizer({"tokenizer": "bytes", "mask_token_id": 256})
    assert masked("a<mask>b").input_ids == [97, 256, 98] and masked.mask_token_id == 256
    assert note.endswith("<mask> is the mask token (id 256)")
    gap, note = hf_tokenizer({"tokenizer": "bytes", "mask_token_id": 300})
    assert "<mask>" not in gap.get_vocab() and "no <mask> token" in note
    assert hf_tokenizer({"name": "synthetic"}) == (
        None,
        "none: the run's data (synthetic) are token ids, not text",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny rotary run trained by train(cfg) on text with a local BPE tokenizer."""
    root = tmp_path_factory.mktemp("exported")
    (root / "train.txt").write_text(TEXT * 2000)
    data = [f"data.path={root / 'train.txt'}", "data.tokenizer=bpe", "data.bpe_vocab_size=300"]
    cfg = compose_train(
        *TINY_TRAINING,
        "data=text",
        *data,
        "data.val_tokens=512",
        "model.positions=rope",
        output_dir=root / "run",
    )
    assert train(cfg)["status"] == "completed"
    return root / "run"


def test_load_model_gives_the_trained_weights_in_eval_mode(trained: Path) -> None:
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    saved = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    for path in (trained, trained / "checkpoints" / "last.ckpt"):
        model = scalinglab.load_model(path)
        assert isinstance(model, GPT) and not any(m.training for m in model.modules())
        state = model.state_dict()
        assert state.keys() == saved.keys()
        assert all(torch.equal(state[k], saved[k]) for k in saved)


def test_a_trained_run_exports_with_its_tokenizer(trained: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "hf"
    assert main([str(trained), "--out", str(out)]) == 0
    assert "GPTNeoXForCausalLM" in capsys.readouterr().out
    model = scalinglab.load_model(trained)
    assert_same_model(model, out)
    # The run's tokenizer: the ids it trained on, <|endoftext|> first.
    tokenizer = AutoTokenizer.from_pretrained(out)
    record = json.loads((trained / "run.json").read_text())
    bpe = BPETokenizer.load(Path(record["data"]["cache_path"]) / "tokenizer.json")
    assert tokenizer(TEXT).input_ids == bpe.encode([TEXT.encode()])[0].tolist()
    assert "tokenizer: bpe" in (out / "README.md").read_text()


def files(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_another_runs_checkpoint_is_refused_by_export_and_load_model(
    trained: Path, tmp_path: Path, capsys
) -> None:
    """A checkpoint of another width in the run's checkpoints/ is not exported or loaded as the
    run's model (nor one of its shape from another run)."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    cases = [
        ({"d_model": 32}, "model.d_model=32 in the checkpoint, 64 in run.json"),
        ({}, f"run_id=other in the checkpoint, {run_id} in run.json"),
    ]
    for shape, differs in cases:
        checkpoint = foreign_checkpoint(run, "other", **shape)
        before = files(run)
        refusal = f"{checkpoint} is not this run's: {differs}"
        for source in (run, checkpoint):
            assert main([str(source), "--out", str(tmp_path / "hf")]) == 2
            assert capsys.readouterr().err.strip() == f"scaling-export: error: {refusal}"
            with pytest.raises(ConfigError) as refused:
                scalinglab.load_model(source)
            assert str(refused.value) == refusal
        assert not (tmp_path / "hf").exists() and files(run) == before


def test_export_refuses_a_non_empty_directory_unless_forced(
    trained: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([str(trained), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"scaling-export: error: --out {out} is not empty: pass --force to write into it"
    )
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main([str(trained), "--out", str(out), "--force"]) == 0
    assert (out / "config.json").is_file() and (out / "notes.txt").read_text() == "mine"


def test_export_never_writes_into_a_run_directory(trained: Path, tmp_path: Path, capsys) -> None:
    """Not the run exported (nor a folder in it, given the run or its .ckpt), nor another run's
    directory (one holding run.json), --force or not."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "run.json").rename(run / "record.json")  # the run given is a run directory without it
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text((run / "record.json").read_text())
    before, theirs = files(run), files(other)
    checkpoint = run / "checkpoints" / "last.ckpt"
    cases = [
        (run, run, run),
        (run, run / "hf", run),
        (run, run / "checkpoints", run),
        (run, other, other),
        (checkpoint, other / "hf", other),
    ]
    for source, out, inside in cases:
        for force in ([], ["--force"]):
            assert main([str(source), "--out", str(out), *force]) == 2
            assert capsys.readouterr().err.strip() == (
                f"scaling-export: error: --out {out} is in the run directory {inside}: "
                "an export goes outside it"
            )
    assert files(run) == before and files(other) == theirs


def test_a_trained_mlm_run_exports_with_its_mask_token(tmp_path: Path, capsys) -> None:
    """A tiny objective=mlm run on text (bytes): scaling-export gives RobertaPreLayerNorm with the
    model's logits on a masked validation batch, and a tokenizer whose <mask> is the mask id."""
    (tmp_path / "train.txt").write_text(TEXT * 400)
    cfg = compose_train(
        *TINY_TRAINING,
        "objective=mlm",
        "data=text",
        f"data.path={tmp_path / 'train.txt'}",
        "data.val_tokens=512",
        output_dir=tmp_path / "run",
    )
    record = train(cfg)
    assert record["status"] == "completed"
    mask_token_id = record["data"]["mask_token_id"]
    out = tmp_path / "hf"
    assert main([str(tmp_path / "run"), "--out", str(out)]) == 0
    assert "RobertaPreLayerNormForMaskedLM" in capsys.readouterr().out
    model = scalinglab.load_model(tmp_path / "run")
    hf = assert_same_masked_lm(model, out, mask_token_id)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.mask_token == "<mask>" and tokenizer.mask_token_id == mask_token_id == 256
    ids = tokenizer("the quick <mask>rown fox", return_tensors="pt").input_ids
    assert ids[0].tolist() == [*b"the quick ", mask_token_id, *b"rown fox"]
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max().item() <= TOLERANCE
    filled = pipeline("fill-mask", model=str(out), top_k=1)("the quick <mask>rown fox")
    assert len(filled) == 1 and 0 < filled[0]["score"] <= 1


def test_import_scalinglab_stays_free_of_torch_until_load_model_is_used() -> None:
    code = (
        "import sys, scalinglab; assert 'torch' not in sys.modules; "
        "assert callable(scalinglab.load_model); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
