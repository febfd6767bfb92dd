"""The Zipf-state language (data=synthetic_powerlaw): its exact floor against brute force, its
sampler against its own probabilities, determinism, and the floor as a run records it."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scalinglab.data import PowerLawDataModule
from scalinglab.data.powerlaw_language import PowerLawLanguage
from scalinglab.errors import ConfigError
from scalinglab.train import train
from tests.conftest import TINY_TRAINING, compose_train

TINY_LANGUAGE = {"vocab_size": 4, "n_successors": 2, "noise": 0.3, "zipf_exponent": 1.0, "seed": 1}
SMALL = {"batch_size": 4, "seq_len": 16, "val_tokens": 1024, "n_train_tokens": 8192}


def brute_force_probability(language: PowerLawLanguage, document) -> float:
    """p(document), written out from the definition (not from the class's transition table): a
    first token from the Zipf law q, then each token from its predecessor's rule or, with
    probability noise, from q."""
    q, rules = language.unigram, language.successors
    p = q[document[0]]
    for previous, current in itertools.pairwise(document):
        follows = current in rules[previous]
        p *= language.noise * q[current] + (1 - language.noise) * follows / rules.shape[1]
    return p


def brute_force_losses(language: PowerLawLanguage, document) -> list[float]:
    """-log p(x_t | x_<t) for t = 1.., as ratios of brute-force prefix probabilities."""
    prefix = [brute_force_probability(language, document[: t + 1]) for t in range(len(document))]
    return [-math.log(prefix[t] / prefix[t - 1]) for t in range(1, len(document))]


def test_the_language_is_a_zipf_law_over_states_with_sparse_rules():
    language = PowerLawLanguage.random(
        vocab_size=64, n_successors=3, noise=0.2, zipf_exponent=1.5, seed=0
    )
    q = language.unigram
    np.testing.assert_allclose(q / q[0], np.arange(1, 65.0) ** -1.5)
    assert language.successors.shape == (64, 3)
    assert all(len(set(row)) == 3 for row in language.successors.tolist())  # distinct successors
    # Successors are drawn from q: the most frequent state follows far more states than the last.
    in_degree = np.bincount(language.successors.ravel(), minlength=64)
    assert in_degree[:4].sum() > 10 * max(1, in_degree[-16:].sum())


def test_floor_matches_brute_force_on_a_tiny_language():
    language = PowerLawLanguage.random(**TINY_LANGUAGE)
    documents = language.sample(40, 7, seed=3)
    expected = np.array([brute_force_losses(language, list(d)) for d in documents])
    log_probs = language.log_predictive(documents)
    got = -np.take_along_axis(log_probs, documents[:, 1:, None], axis=2)[..., 0]
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert language.bayes_loss(documents) == pytest.approx(expected.mean(), rel=1e-12)
    # Each prediction is a distribution over the vocabulary.
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=2), 1, rtol=1e-12)


def test_sampler_draws_documents_with_the_languages_probabilities():
    """All 4^5 documents of length 5, enumerated: their frequencies among 40,000 samples against
    brute-force probabilities (tolerance about 5 binomial standard errors), and the mean Bayes loss
    of the samples against its exact expectation."""
    language = PowerLawLanguage.random(**TINY_LANGUAGE)
    length = 5
    everything = list(itertools.product(range(language.vocab_size), repeat=length))
    probs = np.array([brute_force_probability(language, d) for d in everything])
    assert probs.sum() == pytest.approx(1, rel=1e-12)

    samples = language.sample(40_000, length, seed=[7, 7])
    index = {d: i for i, d in enumerate(everything)}
    counts = np.bincount([index[tuple(d)] for d in samples.tolist()], minlength=len(everything))
    np.testing.assert_allclose(counts / len(samples), probs, atol=5 * np.sqrt(probs.max() / 40_000))

    expected_loss = sum(
        p * np.mean(brute_force_losses(language, list(d)))
        for p, d in zip(probs, everything, strict=True)
    )
    assert language.bayes_loss(samples) == pytest.approx(expected_loss, abs=0.01)


def setup(tmp_path: Path, **kwargs) -> PowerLawDataModule:
    dm = PowerLawDataModule(cache_dir=str(tmp_path), **{**SMALL, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_deterministic_from_the_language_seed(tmp_path: Path):
    first = setup(tmp_path / "a")
    again = setup(tmp_path / "b", seed=9)  # another job of the sweep: other batches, same data
    other = setup(tmp_path / "c", language_seed=1)
    for split in ("train_split", "val_split"):
        a, b = getattr(first, split), getattr(again, split)
        np.testing.assert_array_equal(a.read(0, len(a)), b.read(0, len(b)))
    meta = first.metadata()
    assert meta["fingerprint"] == again.metadata()["fingerprint"] != other.metadata()["fingerprint"]
    assert meta["irreducible_loss"] == again.metadata()["irreducible_loss"]
    assert meta["irreducible_loss"] != other.metadata()["irreducible_loss"]
    # The cache is used: a second module over the same directory reads what the first wrote.
    cached = setup(tmp_path / "a")
    assert cached.metadata()["cache_path"] == meta["cache_path"]
    assert len(list((tmp_path / "a").glob("synthetic_powerlaw-*"))) == 1


def test_true_predictions_on_the_validation_batches_score_the_floor(tmp_path: Path):
    """The generator's predictive, scored like a model on the batches the trainer validates on,
    gives exactly the recorded irreducible loss; the Zipf law alone (no rules) does worse."""
    dm = setup(tmp_path, vocab_size=24)
    meta = dm.metadata()
    assert meta["vocab_size"] == 24 and meta["n_val_windows"] == 1024 // 17
    losses, blind = [], []
    for x, y in dm.val_dataloader():
        windows = torch.cat([x[:, :1], y], dim=1).numpy()
        logits = torch.from_numpy(dm.language.log_predictive(windows))
        losses.append(
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        )
        unsure = torch.from_numpy(np.log(dm.language.unigram)).expand_as(logits)
        blind.append(
            torch.nn.functional.cross_entropy(unsure.flatten(0, 1), y.flatten(), reduction="none")
        )
    floor = meta["irreducible_loss"]
    assert torch.cat(losses).mean().item() == pytest.approx(floor, rel=1e-12)
    assert torch.cat(blind).mean().item() > floor + 0.05
    assert 0.5 < floor < math.log(24)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"vocab_size": 1}, "data.vocab_size"),
        ({"vocab_size": 2**16 + 1}, "data.vocab_size"),
        ({"n_successors": 97}, "data.n_successors"),
        ({"noise": 0}, "data.noise"),
        ({"zipf_exponent": -1}, "data.zipf_exponent"),
    ],
)
def test_bad_parameters_are_refused(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        PowerLawDataModule(**kwargs)


def test_a_run_records_the_floor_and_stays_above_it(tmp_path: Path):
    cfg = compose_train(
        *TINY_TRAINING,
        "data=synthetic_powerlaw",
        "data.vocab_size=24",
        "data.n_train_tokens=16384",
        "data.val_tokens=1056",
        output_dir=tmp_path / "run",
    )
    train(cfg)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "completed"
    floor = record["irreducible_loss"]
    assert floor == record["data"]["irreducible_loss"] and floor > 0
    assert record["data"]["n_val_windows"] == 1056 // 33
    assert record["val_loss"] > floor
