"""The token sources: each a TokenDataModule that loads its corpus and splits it the one way
(datamodule.py): llm.c shards, Python's standard library, local text, Hugging Face datasets and a
synthetic Markov language."""

from __future__ import annotations

import hashlib
import json
import tarfile
from functools import cached_property
from pathlib import Path

import numpy as np

from scalinglab.data.corpus import (
    META_FILE,
    Documents,
    corpus_key,
    fingerprint_documents,
    load_tokenizer,
    prepare_corpus,
    resolve_files,
    tokenizer_digest,
)
from scalinglab.data.datamodule import DEFAULT_CACHE_DIR, TokenDataModule, TokenSequence
from scalinglab.data.shards import MAX_VOCAB, read_shard
from scalinglab.data.synthetic import MarkovChain
from scalinglab.data.tokenizer import FIXED_VOCAB_SIZES, Tokenizer, check_tokenizer_config
from scalinglab.errors import ConfigError

STDLIB_ARCHIVE = Path(__file__).parent / "corpora" / "cpython-3.11.7-lib.tar.gz"


def _last_tokens_held_out(
    tokens: TokenSequence, val_tokens: int, source: str
) -> tuple[TokenSequence, TokenSequence]:
    if len(tokens) <= val_tokens:
        raise ConfigError(
            f"data.val_tokens={val_tokens}: the {source} corpus has only {len(tokens)} tokens"
        )
    return tokens.span(0, len(tokens) - val_tokens), tokens.span(
        len(tokens) - val_tokens, len(tokens)
    )


class ShardsDataModule(TokenDataModule):
    """Pre-tokenized uint16 shards (llm.c / modded-nanogpt format, e.g. FineWeb), memory-mapped.

    `path` is a shard file, a directory (its *.bin files) or a glob; the shards are read in sorted
    order as one sequence (FineWeb's fineweb_val_* sorts after fineweb_train_*, so the default
    validation split comes from the val shard). vocab_size comes from this argument, else from a
    meta.json beside the shards (written by scaling-prepare), else from the tokenizer's name.
    """

    name = "shards"

    def __init__(
        self,
        path: str | None = None,
        vocab_size: int | None = None,
        tokenizer: str = "gpt2",
        **common,
    ) -> None:
        super().__init__(**common)
        self.path, self.tokenizer_name, self.config_vocab_size = path, tokenizer, vocab_size

    def load_splits(self) -> tuple[TokenSequence, TokenSequence, dict]:
        files = resolve_files(self.path, "data.path", pattern="*.bin")
        shards = [read_shard(f) for f in files]
        meta_file = files[0].parent / META_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        vocab_size = (
            self.config_vocab_size
            or meta.get("vocab_size")
            or FIXED_VOCAB_SIZES.get(self.tokenizer_name)
        )
        if not vocab_size:
            raise ConfigError(f"data.vocab_size is not set and {meta_file} does not exist")
        # Fingerprint a sample of each shard: hashing FineWeb's gigabytes on every job start is slow.
        digest = hashlib.sha256()
        for shard in shards:
            digest.update(len(shard).to_bytes(8, "little"))
            digest.update(np.ascontiguousarray(shard[: 1 << 20]).tobytes())
            digest.update(np.ascontiguousarray(shard[-(1 << 20) :]).tobytes())
        train, val = _last_tokens_held_out(TokenSequence(shards), self.val_tokens, "shards")
        largest_val_token = int(val.read(0, len(val)).max())
        if largest_val_token >= vocab_size:
            raise ConfigError(
                f"data.path={self.path}: token id {largest_val_token} does not fit vocab_size {vocab_size}"
            )
        info = {
            "fingerprint": digest.hexdigest(),
            "tokenizer": meta.get("tokenizer", self.tokenizer_name),
            "vocab_size": int(vocab_size),
            "bytes_per_token": meta.get("bytes_per_token"),
            "path": str(self.path),
            "n_shards": len(shards),
            "tokenizer_sha256": tokenizer_digest(files[0].parent),
        }
        return train, val, info


class _TokenizedTextDataModule(TokenDataModule):
    """Text documents tokenized once into cached shards under cache_dir, keyed by the content's
    fingerprint and the tokenizer, and shared by every job that asks for the same."""

    def __init__(
        self,
        tokenizer: str = "bytes",
        bpe_vocab_size: int = 4096,
        cache_dir: str | None = None,
        **common,
    ) -> None:
        super().__init__(**common)
        check_tokenizer_config(tokenizer, bpe_vocab_size)
        self.tokenizer_name, self.bpe_vocab_size = tokenizer, bpe_vocab_size
        self.cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
        self.tokenizer: Tokenizer | None = None

    def source_files(self) -> list[Path]:
        """The files whose content defines the corpus (fingerprinted for the cache key)."""
        raise NotImplementedError

    def documents(self) -> Documents:
        return lambda: (f.read_bytes() for f in self.source_files())

    def prepare(self, out_dir: str | Path | None = None, shard_tokens: int | None = None) -> Path:
        """Tokenize into out_dir (default: this corpus's cache directory) unless done already."""
        if out_dir is None:
            key = corpus_key(
                self.name,
                self.fingerprint,
                self.tokenizer_name,
                self.bpe_vocab_size,
                self.val_tokens,
            )
            out_dir = self.cache_dir / key
        prepare_corpus(
            out_dir,
            self.documents(),
            source=self.name,
            fingerprint=self.fingerprint,
            tokenizer=self.tokenizer_name,
            bpe_vocab_size=self.bpe_vocab_size,
            val_tokens=self.val_tokens,
            **({"shard_tokens": shard_tokens} if shard_tokens else {}),
        )
        return Path(out_dir)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint_documents(f.read_bytes() for f in self.source_files())

    def prepare_data(self) -> None:
        self.prepare()

    def load_splits(self) -> tuple[TokenSequence, TokenSequence, dict]:
        corpus_dir = self.prepare()
        meta = json.loads((corpus_dir / META_FILE).read_text())
        self.tokenizer = load_tokenizer(corpus_dir, self.tokenizer_name)
        shards = [read_shard(f) for f in sorted(corpus_dir.glob("*.bin"))]
        train, val = _last_tokens_held_out(TokenSequence(shards), self.val_tokens, self.name)
        recorded = ["fingerprint", "tokenizer", "bpe_vocab_size", "vocab_size", "bytes_per_token"]
        info = {key: meta[key] for key in recorded if key in meta} | {
            "n_documents": meta["n_documents"],
            "path": str(self.path),
            "cache_path": str(corpus_dir),
            "tokenizer_sha256": tokenizer_digest(corpus_dir),
        }
        return train, val, info


def _leading_files(archive: Path, max_bytes: int) -> list[bytes]:
    """The archive's files in their stored order, whole, until max_bytes are read."""
    chosen, n_bytes = [], 0
    with tarfile.open(archive, "r:gz") as members:
        for member in members:
            if n_bytes >= max_bytes:
                break
            chosen.append(members.extractfile(member).read())
            n_bytes += member.size
    if n_bytes < max_bytes:
        raise ConfigError(
            f"data.max_bytes={max_bytes}: the pinned standard library holds only {n_bytes} "
            "bytes; for more text use data=text data.path=..."
        )
    return chosen


class PythonStdlibDataModule(_TokenizedTextDataModule):
    """CPython 3.11.7's standard library source, pinned: its *.py files (installed packages left
    out) in sorted order, whole files up to 8 MB, shipped in the package (corpora/, with the PSF
    licence). The same bytes on every machine, whatever Python runs the job; the fingerprint in
    metadata() proves it. `max_bytes` takes whole files from the start until that many are read.
    """

    name = "python_stdlib"

    def __init__(self, max_bytes: int = 8_000_000, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_bytes <= 0:
            raise ConfigError(f"data.max_bytes={max_bytes} must be positive")
        self.max_bytes = max_bytes
        self.path = STDLIB_ARCHIVE
        self._documents = _leading_files(self.path, max_bytes)  # 0.05 s; fails before training

    def documents(self) -> Documents:
        return lambda: iter(self._documents)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint_documents(self._documents)


class TextDataModule(_TokenizedTextDataModule):
    """Local text files: `path` is a file, a directory (all its files, recursively) or a glob; each
    file is one document."""

    name = "text"

    def __init__(self, path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = path
        resolve_files(path, "data.path")  # fail before any training

    def source_files(self) -> list[Path]:
        return resolve_files(self.path, "data.path")


class HFDataModule(_TokenizedTextDataModule):
    """A Hugging Face `datasets` dataset on local disk: a `save_to_disk` directory, or json/jsonl/
    parquet/csv/txt file(s) (a file or a glob); `text_field` holds each document."""

    name = "hf"

    def __init__(
        self, path: str | None = None, text_field: str = "text", split: str = "train", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.path, self.text_field, self.split = path, text_field, split
        resolve_files(path, "data.path")

    def source_files(self) -> list[Path]:
        return resolve_files(self.path, "data.path")

    def documents(self) -> Documents:
        return lambda: (text.encode() for text in self._texts())

    def _texts(self):
        dataset = self._dataset
        for rows in dataset.select_columns([self.text_field]).iter(batch_size=1000):
            yield from (text for text in rows[self.text_field] if text)

    @cached_property
    def _dataset(self):
        try:
            import datasets
        except ImportError as error:
            raise ConfigError(
                "data=hf needs the `datasets` package: pip install 'scalinglab[hf]'"
            ) from error
        path = Path(self.path).expanduser()
        if path.is_dir():
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                if self.split not in dataset:
                    raise ConfigError(
                        f"data.split={self.split!r}: {path} has splits {list(dataset)}"
                    )
                dataset = dataset[self.split]
        else:
            files = self.source_files()
            builders = {
                ".json": "json",
                ".jsonl": "json",
                ".parquet": "parquet",
                ".csv": "csv",
                ".txt": "text",
            }
            builder = builders.get(files[0].suffix)
            if builder is None:
                raise ConfigError(
                    f"data.path={self.path}: {files[0].suffix!r} is not one of {sorted(builders)}"
                )
            dataset = datasets.load_dataset(
                builder,
                data_files=[str(f) for f in files],
                split="train",
                cache_dir=str(self.cache_dir / "hf_datasets"),
            )
        if self.text_field not in dataset.column_names:
            raise ConfigError(
                f"data.text_field={self.text_field!r}: the dataset's columns are {dataset.column_names}"
            )
        return dataset


class SyntheticDataModule(TokenDataModule):
    """Independent chains of a random sparse order-1 Markov chain (see synthetic.MarkovChain), each
    seq_len+1 tokens long and started from the stationary distribution, so every window is one
    chain.

    Because y is x shifted by one, even a window's first target has its predecessor (the window's
    first token) in context, and that is all an order-1 chain depends on; so the best expected
    loss at every position, and on the validation set, is exactly the entropy rate:
    irreducible_loss = entropy_rate (nats/token).

    The language is fixed by language_seed, not by `seed`, so every job of a sweep learns the same
    language and sees the same validation chains.
    """

    name = "synthetic"

    def __init__(
        self,
        vocab_size: int = 128,
        n_next: int = 8,
        n_train_tokens: int = 4_194_304,
        language_seed: int = 0,
        **common,
    ) -> None:
        super().__init__(**common)
        if not 2 <= vocab_size <= MAX_VOCAB:
            raise ConfigError(f"data.vocab_size={vocab_size} must lie in [2, {MAX_VOCAB}]")
        if not 2 <= n_next <= vocab_size:
            raise ConfigError(f"data.n_next={n_next} must lie in [2, data.vocab_size={vocab_size}]")
        if n_train_tokens <= 0:
            raise ConfigError(f"data.n_train_tokens={n_train_tokens} must be positive")
        self.chain = MarkovChain.random(vocab_size, n_next, language_seed)
        self.n_train_tokens, self.language_seed = n_train_tokens, language_seed

    def load_splits(self) -> tuple[TokenSequence, TokenSequence, dict]:
        window = self.seq_len + 1
        train = self.chain.sample(self.n_train_tokens // window, window, [self.language_seed, 1])
        val = self.chain.sample(self.val_tokens // window, window, [self.language_seed, 2])
        train, val = train.astype(np.uint16).ravel(), val.astype(np.uint16).ravel()
        entropy_rate = self.chain.entropy_rate()
        info = {
            "fingerprint": hashlib.sha256(train.tobytes() + val.tobytes()).hexdigest(),
            "tokenizer": "synthetic",
            "vocab_size": self.chain.vocab_size,
            "irreducible_loss": entropy_rate,
            "entropy_rate": entropy_rate,
            "language_seed": self.language_seed,
            "n_next": self.chain.next_states.shape[1],
        }
        return TokenSequence([train]), TokenSequence([val]), info
