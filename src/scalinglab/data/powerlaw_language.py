"""A synthetic language whose loss falls as a power law in parameters and tokens towards a floor that
is known exactly: one sparse Markov chain over many states whose usage follows a Zipf law.

Each token (state) has its own next-token rule, a "quantum" in the sense of Michaud et al. (2023):
with probability 1 - noise the next token is one of the state's n_successors successors (equally
likely), otherwise a draw from the Zipf distribution q_k ~ (k+1)^-zipf_exponent. Successors are
drawn from q too, so a few states are used often and most rarely. A model learns the rules of the
frequent states first: a rule needs its state seen often enough (tokens) and room to be held (the
table has vocab_size rows but the model's logits have rank d_model and its MLP finite width), so
the loss keeps falling with diminishing returns in both. Unlike a marker-led mixture of chains, no
rule needs attention to a distant token, so small models learn from the first steps instead of
after a plateau.

The floor is the true chain's own loss, -log T[x_t-1, x_t] averaged over every target of the
validation windows (`bayes_loss`): the chain is order 1, so the previous token is a sufficient
statistic and no predictor of those tokens does better.
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
    successors: np.ndarray  # (vocab_size, n_successors): where each state's rule leads
    unigram: np.ndarray  # (vocab_size,): the Zipf distribution q of first tokens and noise draws
    noise: float  # probability that a next token is drawn from q instead of the rule

    @classmethod
    def random(
        cls, vocab_size: int, n_successors: int, noise: float, zipf_exponent: float, seed: int
    ) -> PowerLawLanguage:
        rng = np.random.default_rng(seed)
        weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -zipf_exponent
        unigram = weights / weights.sum()
        # n_successors distinct states per row, drawn from q without replacement: the top-k of
        # log q plus Gumbel noise (the Gumbel-top-k trick).
        keys = np.log(unigram)[None, :] + rng.gumbel(size=(vocab_size, vocab_size))
        successors = np.argsort(-keys, axis=1)[:, :n_successors]
        return cls(successors, unigram, float(noise))

    @property
    def vocab_size(self) -> int:
        return self.successors.shape[0]

    def transition_log_probs(self) -> np.ndarray:
        """(vocab_size, vocab_size): log T[previous, next]."""
        n_states, n_successors = self.successors.shape
        probs = np.tile(self.noise * self.unigram, (n_states, 1))
        probs[np.arange(n_states)[:, None], self.successors] += (1 - self.noise) / n_successors
        return np.log(probs)

    def sample(self, n_documents: int, length: int, seed: int | list[int]) -> np.ndarray:
        """(n_documents, length) documents: a first token from q, then the chain."""
        if length < 2:
            raise ValueError(f"a document is at least two tokens, not {length}")
        rng = np.random.default_rng(seed)
        tokens = np.empty((n_documents, length), dtype=np.int64)
        tokens[:, 0] = rng.choice(self.vocab_size, size=n_documents, p=self.unigram)
        n_successors = self.successors.shape[1]
        for t in range(1, length):
            follows = self.successors[
                tokens[:, t - 1], rng.integers(n_successors, size=n_documents)
            ]
            drawn = rng.choice(self.vocab_size, size=n_documents, p=self.unigram)
            tokens[:, t] = np.where(rng.random(n_documents) < self.noise, drawn, follows)
        return tokens

    def log_predictive(self, documents: np.ndarray) -> np.ndarray:
        """(n, length-1, vocab_size): log p(next token | the document so far) at every position,
        what a model sees as logits for targets x[:, 1:]."""
        return self.transition_log_probs()[np.asarray(documents)[:, :-1]]

    def bayes_loss(self, documents: np.ndarray) -> float:
        """Mean -log p(x_t | x_<t) over every target of the documents (nats/token): the loss of the
        best possible predictor on exactly these tokens."""
        documents = np.asarray(documents)
        log_transition = self.transition_log_probs()
        return float(-log_transition[documents[:, :-1], documents[:, 1:]].mean())


class PowerLawDataModule(TokenDataModule):
    """Documents of a PowerLawLanguage, one per window of seq_len+1 tokens; metadata records the
    exact Bayes loss of the validation windows as irreducible_loss.

    The language and both splits are fixed by language_seed (not `seed`), so every job of a sweep
    learns the same language and is scored on the same windows against the same floor. The tokens
    and the floor are generated once into cache_dir, keyed by every parameter that shapes them.
    """

    name = "synthetic_powerlaw"
    version = 2  # bump when the generator changes, so cached tokens are not reused

    def __init__(
        self,
        vocab_size: int = 96,
        n_successors: int = 2,
        noise: float = 0.1,
        zipf_exponent: float = 2.0,
        n_train_tokens: int = 8_388_608,
        language_seed: int = 0,
        cache_dir: str | None = None,
        **common,
    ) -> None:
        super().__init__(**common)
        checks = [
            (vocab_size >= 2, f"data.vocab_size={vocab_size} must be at least 2"),
            (vocab_size <= MAX_VOCAB, f"data.vocab_size={vocab_size} must be at most {MAX_VOCAB}"),
            (1 <= n_successors <= vocab_size, f"data.n_successors={n_successors} must lie in [1, data.vocab_size]"),
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
            "n_successors": n_successors,
            "noise": float(noise),
            "zipf_exponent": float(zipf_exponent),
            "language_seed": language_seed,
            "document_length": self.seq_len + 1,
            "n_train_documents": n_train_tokens // (self.seq_len + 1),
            "n_val_documents": self.val_tokens // (self.seq_len + 1),
        }
        self.language = PowerLawLanguage.random(
            vocab_size, n_successors, noise, zipf_exponent, language_seed
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
