"""A synthetic language whose loss falls as a power law in parameters and tokens towards a floor that
is known exactly: a Zipf mixture of simple sources (the "quanta" of Michaud et al. 2023).

Each document comes from one of n_sources sources, source k with probability proportional to
(k+1)^-zipf_exponent. A source is a sparse order-1 Markov chain over the content tokens: from each
token it moves to one of n_successors tokens of its own (equally likely), except that with
probability `noise` the next token is uniform instead. A document is the source's marker token
(marker k mod n_markers, so n_markers < n_sources makes sources share markers and leaves a reader
unsure which source speaks until the transitions tell), a uniform first content token, then the
chain. A model learns the frequent sources first; the rarer ones wait for more parameters to hold
their tables and more tokens to show them, so the loss keeps falling with diminishing returns.

The floor is the true model's own loss: log p(x_t | x_0..x_t-1) with the posterior over the source
updated exactly from the marker and every transition read so far (`log_predictive`), averaged over
the validation windows. One document fills one window, so a model sees exactly what the true
model conditions on, and no better prediction of those tokens exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from scalinglab.data.corpus import META_FILE
from scalinglab.data.datamodule import DEFAULT_CACHE_DIR, TokenDataModule, TokenSequence
from scalinglab.data.shards import MAX_VOCAB, read_shard, write_shard
from scalinglab.errors import ConfigError


@dataclass
class PowerLawLanguage:
    successors: np.ndarray  # (n_sources, n_content, n_successors): where each source's token goes
    source_probs: np.ndarray  # (n_sources,): how often each source writes a document
    noise: float  # probability that a next token is uniform over the content tokens instead
    n_markers: (
        int  # marker tokens, ids n_content .. n_content+n_markers-1; source k uses k % n_markers
    )

    @classmethod
    def random(
        cls,
        n_content: int,
        n_sources: int,
        n_markers: int,
        n_successors: int,
        noise: float,
        zipf_exponent: float,
        seed: int,
    ) -> PowerLawLanguage:
        rng = np.random.default_rng(seed)
        # n_successors distinct tokens for every (source, token): the first columns of a random
        # permutation per row.
        keys = rng.random((n_sources, n_content, n_content))
        successors = np.argsort(keys, axis=2)[:, :, :n_successors]
        weights = np.arange(1, n_sources + 1, dtype=np.float64) ** -zipf_exponent
        return cls(successors, weights / weights.sum(), float(noise), int(n_markers))

    @property
    def n_sources(self) -> int:
        return self.successors.shape[0]

    @property
    def n_content(self) -> int:
        return self.successors.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.n_content + self.n_markers

    def marker(self, source: np.ndarray) -> np.ndarray:
        return self.n_content + np.asarray(source) % self.n_markers

    def transition_log_probs(self) -> np.ndarray:
        """(n_sources, n_content, n_content): log P_k(next | previous)."""
        n_sources, n_content, n_successors = self.successors.shape
        probs = np.full((n_sources, n_content, n_content), self.noise / n_content)
        rows = np.arange(n_sources)[:, None, None], np.arange(n_content)[None, :, None]
        probs[(*rows, self.successors)] += (1 - self.noise) / n_successors
        return np.log(probs)

    def sample(self, n_documents: int, length: int, seed: int | list[int]) -> np.ndarray:
        """(n_documents, length) documents: marker, uniform first token, then the source's chain."""
        if length < 2:
            raise ValueError(f"a document is at least a marker and one token, not {length}")
        rng = np.random.default_rng(seed)
        sources = rng.choice(self.n_sources, size=n_documents, p=self.source_probs)
        tokens = np.empty((n_documents, length), dtype=np.int64)
        tokens[:, 0] = self.marker(sources)
        tokens[:, 1] = rng.integers(self.n_content, size=n_documents)
        n_successors = self.successors.shape[2]
        for t in range(2, length):
            follows = self.successors[
                sources, tokens[:, t - 1], rng.integers(n_successors, size=n_documents)
            ]
            uniform = rng.integers(self.n_content, size=n_documents)
            tokens[:, t] = np.where(rng.random(n_documents) < self.noise, uniform, follows)
        return tokens

    def log_predictive(self, documents: np.ndarray) -> np.ndarray:
        """(n, length-1, vocab_size): log p(next token | the document so far) at every position, the
        source's posterior tracked exactly; what a model sees as logits for targets x[:, 1:]."""
        documents = np.asarray(documents)
        n, length = documents.shape
        log_transition = self.transition_log_probs()
        sources = np.arange(self.n_sources)
        # The marker restricts the prior to the sources that use it.
        same_marker = self.marker(sources)[None, :] == documents[:, :1]
        log_posterior = np.where(same_marker, np.log(self.source_probs)[None, :], -np.inf)
        log_posterior -= _logsumexp(log_posterior, axis=1, keepdims=True)
        out = np.full((n, length - 1, self.vocab_size), -np.inf)
        out[:, 0, : self.n_content] = -np.log(self.n_content)
        for t in range(2, length):
            previous, current = documents[:, t - 1], documents[:, t]
            # (n, sources, next): log p(source | so far) + log P_source(next | previous)
            joint = log_posterior[:, :, None] + log_transition[:, previous].transpose(1, 0, 2)
            out[:, t - 1, : self.n_content] = _logsumexp(joint, axis=1)
            log_posterior = joint[np.arange(n), :, current]
            log_posterior -= _logsumexp(log_posterior, axis=1, keepdims=True)
        return out

    def bayes_loss(self, documents: np.ndarray, chunk: int = 256) -> float:
        """Mean -log p(x_t | x_<t) over every target of the documents (nats/token): the loss of the
        best possible predictor on exactly these tokens."""
        documents = np.asarray(documents)
        total = 0.0
        for start in range(0, len(documents), chunk):
            part = documents[start : start + chunk]
            log_probs = self.log_predictive(part)
            total -= np.take_along_axis(log_probs, part[:, 1:, None], axis=2).sum()
        return float(total / (documents.shape[0] * (documents.shape[1] - 1)))


def _logsumexp(a: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    peak = np.max(a, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    out = np.log(np.sum(np.exp(a - peak), axis=axis, keepdims=True)) + peak
    return out if keepdims else np.squeeze(out, axis=axis)


class PowerLawDataModule(TokenDataModule):
    """Documents of a PowerLawLanguage, one per window of seq_len+1 tokens; metadata records the
    exact Bayes loss of the validation windows as irreducible_loss.

    The language and both splits are fixed by language_seed (not `seed`), so every job of a sweep
    learns the same language and is scored on the same windows against the same floor. The tokens
    and the floor are generated once into cache_dir, keyed by every parameter that shapes them.
    """

    name = "synthetic_powerlaw"
    version = 1  # bump when the generator changes, so cached tokens are not reused

    def __init__(
        self,
        vocab_size: int = 96,
        n_sources: int = 64,
        n_markers: int = 64,
        n_successors: int = 2,
        noise: float = 0.1,
        zipf_exponent: float = 2.0,
        n_train_tokens: int = 8_388_608,
        language_seed: int = 0,
        cache_dir: str | None = None,
        **common,
    ) -> None:
        super().__init__(**common)
        n_content = vocab_size - n_markers
        checks = [
            (1 <= n_markers <= n_sources, f"data.n_markers={n_markers} must lie in [1, data.n_sources]"),
            (n_content >= 2, f"data.vocab_size={vocab_size} must exceed data.n_markers={n_markers} by 2 or more"),
            (vocab_size <= MAX_VOCAB, f"data.vocab_size={vocab_size} must be at most {MAX_VOCAB}"),
            (1 <= n_successors <= n_content, f"data.n_successors={n_successors} must lie in [1, {n_content}] (content tokens)"),
            (0 < noise <= 1, f"data.noise={noise} must lie in (0, 1]"),
            (zipf_exponent >= 0, f"data.zipf_exponent={zipf_exponent} must be >= 0"),
            (n_train_tokens > 0, f"data.n_train_tokens={n_train_tokens} must be positive"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.params = {
            "version": self.version,
            "vocab_size": vocab_size,
            "n_sources": n_sources,
            "n_markers": n_markers,
            "n_successors": n_successors,
            "noise": float(noise),
            "zipf_exponent": float(zipf_exponent),
            "language_seed": language_seed,
            "document_length": self.seq_len + 1,
            "n_train_documents": n_train_tokens // (self.seq_len + 1),
            "n_val_documents": self.val_tokens // (self.seq_len + 1),
        }
        self.language = PowerLawLanguage.random(
            n_content, n_sources, n_markers, n_successors, noise, zipf_exponent, language_seed
        )
        self.language_seed = language_seed
        self.cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()

    def prepare_data(self) -> None:
        self.prepare()

    def prepare(self) -> Path:
        """Generate the splits and the floor into the cache unless done already; the directory."""
        key = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:16]
        out_dir = self.cache_dir / f"{self.name}-{key}"
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # One process generates while others wait; a finished directory appears whole (renamed).
        with FileLock(out_dir.parent / f".{out_dir.name}.lock"):
            if (out_dir / META_FILE).exists():
                return out_dir
            building = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            try:
                window, seed = self.params["document_length"], self.language_seed
                train = self.language.sample(self.params["n_train_documents"], window, [seed, 1])
                val = self.language.sample(self.params["n_val_documents"], window, [seed, 2])
                write_shard(building / "train.bin", train.ravel())
                write_shard(building / "val.bin", val.ravel())
                digest = hashlib.sha256(train.astype("<u2").tobytes() + val.astype("<u2").tobytes())
                meta = {
                    **self.params,
                    "fingerprint": digest.hexdigest(),
                    "irreducible_loss": self.language.bayes_loss(val),
                }
                (building / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
                shutil.rmtree(out_dir, ignore_errors=True)
                os.rename(building, out_dir)
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        return out_dir

    def load_splits(self) -> tuple[TokenSequence, TokenSequence, dict]:
        out_dir = self.prepare()
        meta = json.loads((out_dir / META_FILE).read_text())
        train, val = read_shard(out_dir / "train.bin"), read_shard(out_dir / "val.bin")
        info = {
            **{k: v for k, v in meta.items() if k != "version"},
            "tokenizer": "synthetic_powerlaw",
            "generator_version": meta["version"],
            "cache_path": str(out_dir),
        }
        return TokenSequence([train]), TokenSequence([val]), info
