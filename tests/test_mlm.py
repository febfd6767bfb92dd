"""Masked language modelling (objective=mlm): BERT's masks, bidirectional attention, the loss on
masked positions, the mask token in the vocabulary, deterministic masks, and the analysis's refusal
to fit two objectives in one law."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from scalinglab.analysis import load_runs
from scalinglab.analysis.cli import main as scaling_fit
from scalinglab.data import SyntheticDataModule
from scalinglab.data.datamodule import (
    MASK_FRACTION,
    MASK_TOKEN_SHARE,
    RANDOM_TOKEN_SHARE,
    mask_tokens,
    masking_generator,
)
from scalinglab.errors import ConfigError
from scalinglab.guards import build
from scalinglab.model import GPT, GPTConfig
from scalinglab.ops import IGNORE_INDEX, chunked_cross_entropy
from scalinglab.train import train
from tests.analysis.fake_runs import LADDER_SIZES, write_run
from tests.conftest import TINY, compose_train

MLM = ["objective=mlm"]


def synthetic(objective: str = "mlm", **kwargs) -> SyntheticDataModule:
    settings = dict(vocab_size=64, n_train_tokens=32768, val_tokens=4096, batch_size=4, seq_len=32)
    dm = SyntheticDataModule(objective=objective, **(settings | kwargs))
    dm.setup()
    return dm


def first_batches(dm: SyntheticDataModule, n: int, global_step: int = 0) -> list[tuple]:
    """The first n batches of the loader a single-device trainer at global_step would get."""
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    dm.trainer = SimpleNamespace(
        global_step=global_step,
        accumulate_grad_batches=1,
        world_size=1,
        global_rank=0,
        strategy=cpu,
    )
    batches = iter(dm.train_dataloader())
    dm.trainer = None
    return [next(batches) for _ in range(n)]


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )


def within_binomial(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# ---- the masks ---------------------------------------------------------------------------------


def test_bert_masking_proportions() -> None:
    vocab, rows, length = 256, 512, 128
    tokens = torch.randint(vocab, (rows, length), generator=torch.Generator().manual_seed(0))
    x, y = mask_tokens(tokens, vocab, masking_generator(0, 1, 0))
    chosen = y != IGNORE_INDEX
    # The same count in every window: round(15%), so every batch has targets.
    assert (chosen.sum(dim=1) == round(MASK_FRACTION * length)).all()
    assert torch.equal(y[chosen], tokens[chosen])  # targets are the original tokens
    assert torch.equal(x[~chosen], tokens[~chosen])  # the rest is shown as it is
    n = int(chosen.sum())
    masked = int((x[chosen] == vocab).sum())
    replaced = int(((x != tokens) & (x != vocab))[chosen].sum())
    kept = int((x == tokens)[chosen].sum())
    assert masked + replaced + kept == n
    assert within_binomial(masked, n, MASK_TOKEN_SHARE)
    # A random token equals the original one time in V.
    assert within_binomial(replaced, n, RANDOM_TOKEN_SHARE * (1 - 1 / vocab))
    assert within_binomial(kept, n, 1 - MASK_TOKEN_SHARE - RANDOM_TOKEN_SHARE * (1 - 1 / vocab))
    assert int(x.max()) == vocab and int(x[x != vocab].max()) < vocab  # random ids: data's only


def test_training_masks_follow_seed_and_step_and_survive_resume() -> None:
    dm = synthetic(seed=3)
    from_start = first_batches(dm, 12)
    assert same(from_start, first_batches(synthetic(seed=3), 12))
    assert not same(from_start[:3], first_batches(synthetic(seed=4), 3))
    # A run resumed at step 7 gets the batches, masks included, the uninterrupted run got.
    assert same(first_batches(dm, 5, global_step=7), from_start[7:12])
    # Masks differ from batch to batch, and the windows are the clm run's.
    assert not torch.equal(from_start[0][1] == IGNORE_INDEX, from_start[1][1] == IGNORE_INDEX)
    clm = first_batches(synthetic("clm", seed=3), 1)[0]
    unmasked = from_start[0][1] == IGNORE_INDEX
    assert torch.equal(from_start[0][0][unmasked], clm[0][unmasked])


def test_validation_masks_are_the_same_for_every_seed_and_batch_size() -> None:
    def val_set(dm: SyntheticDataModule) -> tuple[torch.Tensor, torch.Tensor]:
        batches = list(dm.val_dataloader())
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])

    x, y = val_set(synthetic(seed=0, batch_size=4))
    for other in (synthetic(seed=1, batch_size=4), synthetic(seed=2, batch_size=7)):
        x2, y2 = val_set(other)
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert ((y != IGNORE_INDEX).sum(dim=1) == round(MASK_FRACTION * 32)).all()
    assert not torch.equal(y[0] == IGNORE_INDEX, y[1] == IGNORE_INDEX)  # masks vary by window


# ---- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
def test_attention_is_bidirectional_under_mlm_only(causal: bool) -> None:
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=32, max_seq_len=16, d_model=32, n_layers=2, n_heads=2, causal=causal)
    )
    idx = torch.randint(32, (1, 16))
    later = idx.clone()
    later[0, -1] = (idx[0, -1] + 1) % 32
    with torch.no_grad():
        first, changed = model(idx), model(later)
    # An earlier position sees a later token only without the causal mask.
    assert torch.allclose(first[0, :-1], changed[0, :-1]) == causal
    assert not torch.allclose(first[0, -1], changed[0, -1])


@pytest.mark.parametrize("loss_chunk_size", [None, 7])
def test_the_loss_is_the_mean_over_masked_positions(loss_chunk_size: int | None) -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=33, max_seq_len=16, d_model=32, n_layers=1, n_heads=2, causal=False)
    model = GPT(cfg)
    tokens = torch.randint(32, (4, 16))
    x, y = mask_tokens(tokens, 32, masking_generator(0, 1, 0))
    with torch.no_grad():
        logits = model(x)
    chosen = y != IGNORE_INDEX
    expected = -logits.log_softmax(-1)[chosen].gather(1, y[chosen, None]).mean()
    cfg.loss_chunk_size = loss_chunk_size
    loss = model.loss(x, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Gradients too: the chunked loss leaves ignored rows out as F.cross_entropy does.
    hidden = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(11, (40,)).masked_fill(torch.rand(40) < 0.7, IGNORE_INDEX)
    grads = []
    for loss_fn in (
        lambda: F.cross_entropy(hidden @ weight.T, targets),
        lambda: chunked_cross_entropy(hidden, weight, targets, chunk_size=6),
    ):
        value = loss_fn()
        grads.append((value.detach(), *torch.autograd.grad(value, (hidden, weight))))
    for reference, chunked in zip(*grads, strict=True):
        assert torch.allclose(reference, chunked, atol=1e-12)


def test_the_mask_token_is_in_the_vocabulary_and_the_parameter_count() -> None:
    setting = ["data=synthetic", "model=gpt_nano"]
    clm, mlm = compose_train(*setting), compose_train(*setting, *MLM)
    assert mlm.model.vocab_size == clm.model.vocab_size + 1 == mlm.data.vocab_size + 1
    assert mlm.model.causal is False
    assert mlm.model.embedding_norm is True and mlm.model.head_transform is True
    # Tied embeddings: the mask token is one more row, d more parameters; BERT's shape (no biases)
    # adds the embedding norm's d and the head transform's dense d^2 and LayerNorm d.
    d = clm.model.d_model
    assert mlm.plan.n_params == clm.plan.n_params + d + d + d * d + d
    model = GPT(build(mlm.model))
    assert sum(p.numel() for p in model.parameters()) == mlm.plan.n_params
    dm = build(OmegaConf.merge(mlm.data, {"n_train_tokens": 16384, "val_tokens": 2048}))
    dm.setup()
    assert dm.mask_token_id == mlm.model.vocab_size - 1 == dm.vocab_size - 1
    assert dm.metadata()["mask_token_id"] == dm.mask_token_id


def test_objective_clm_is_todays_config() -> None:
    default = compose_train()
    assert compose_train("objective=clm") == default
    # The model's and data's own defaults: the composed config is the one before objectives.
    assert "causal" not in default.model and "objective" not in default.data
    assert "embedding_norm" not in default.model and "head_transform" not in default.model


# ---- training and the record -------------------------------------------------------------------


def val_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["val/loss"]) for r in csv.DictReader(f) if r["val/loss"]]


def test_a_short_mlm_run_learns_and_records_its_objective(tmp_path: Path) -> None:
    overrides = [
        *TINY, *MLM, "data.batch_size=16", "trainer.max_steps=40", "trainer.val_check_interval=10",
        "optimizer.lr=1e-2", "trainer.log_every_n_steps=10",
    ]  # fmt: skip
    record = train(compose_train(*overrides, output_dir=tmp_path / "mlm"))
    assert record["status"] == "completed" and record["objective"] == "mlm"
    assert record["data"]["mask_token_id"] == record["model"]["vocab_size"] - 1
    assert record["irreducible_loss"] is None  # the language's floor is a next-token one
    losses = val_losses(tmp_path / "mlm")
    # Below a uniform guess at the first validation, and falling from there (the same masks).
    assert len(losses) == 4 and losses[0] < math.log(record["model"]["vocab_size"]), losses
    assert losses[-1] < losses[0] - 0.05, losses
    on_disk = json.loads((tmp_path / "mlm" / "run.json").read_text())
    assert on_disk["objective"] == "mlm"
    assert load_runs(tmp_path / "mlm")["objective"].tolist() == ["mlm"]


def test_masked_batches_need_bidirectional_attention(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.objective=mlm with model.causal=True"):
        train(compose_train(*TINY, "+data.objective=mlm", output_dir=tmp_path / "half"))
    assert not (tmp_path / "half").exists()  # refused by the plan: no directory, no record


# ---- analysis ----------------------------------------------------------------------------------


def ladder(root: Path, objectives: list[str | None]) -> Path:
    """Fake ladder runs, one per objective given (None: a record from before objectives)."""
    for k, objective in enumerate(objectives):
        job = write_run(
            root / str(k), run_id=f"r{k}", sweep_id="s", n_params=LADDER_SIZES[k], tokens=1e8
        )
        if objective is not None:
            record = json.loads((job / "run.json").read_text())
            (job / "run.json").write_text(json.dumps(record | {"objective": objective}))
    return root


def test_fits_refuse_to_mix_objectives_unless_asked(tmp_path: Path, capsys) -> None:
    fast = ["--bootstrap", "10"]
    old_and_clm = ladder(tmp_path / "clm", [None, "clm", None, "clm", None, "clm"])
    assert load_runs(old_and_clm)["objective"].tolist() == ["clm"] * 6  # absent: clm
    assert scaling_fit(["power", str(old_and_clm), *fast]) == 0
    assert "loss: val_loss (nats/token)" in capsys.readouterr().out
    masked = ladder(tmp_path / "mlm", ["mlm"] * 6)
    assert scaling_fit(["power", str(masked), *fast]) == 0
    assert "loss: val_loss (nats per masked token)" in capsys.readouterr().out

    mixed = ladder(tmp_path / "mixed", [None, "mlm", "clm", "mlm", "clm", "mlm"])
    capsys.readouterr()
    assert scaling_fit(["power", str(mixed), *fast]) == 2
    error = capsys.readouterr().err
    assert "differ in objective (3 clm, 3 mlm)" in error and "--mix-objectives" in error
    assert scaling_fit(["report", str(mixed), "--out", str(tmp_path / "r.md"), *fast]) == 2
    assert scaling_fit(["power", str(mixed), "--mix-objectives", *fast]) == 0
    assert "in one law (--mix-objectives): objective (3 clm, 3 mlm)" in capsys.readouterr().out
