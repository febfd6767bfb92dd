"""Turning documents into cached token shards, once per (source content, tokenizer), safely when
several jobs of a sweep start at the same time."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from filelock import FileLock

from scalinglab.data.shards import write_shard
from scalinglab.data.tokenizer import (
    MAX_BPE_TOKEN_BYTES,
    BPETokenizer,
    ByteTokenizer,
    GPT2Tokenizer,
    Tokenizer,
)
from scalinglab.errors import ConfigError

SHARD_TOKENS = 100_000_000  # llm.c's shard size
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"

Documents = Callable[[], Iterable[bytes]]  # each call starts a fresh pass over the documents


def resolve_files(path: str | Path | None, key: str, pattern: str = "*") -> list[Path]:
    """The files named by a file, a directory (searched recursively for `pattern`, hidden entries
    skipped) or a glob, sorted; ConfigError naming `key` if there are none or all are empty."""
    if not path:
        raise ConfigError(f"{key} is not set")
    path = Path(path).expanduser()
    if path.exists() and not path.is_file() and not path.is_dir():  # /dev/null, a FIFO
        raise ConfigError(f"{key}={path}: not a file or a directory")
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = []
        for directory, subdirectories, names in os.walk(path):
            subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
            files += [Path(directory, n) for n in names if not n.startswith(".")]
        files = [f for f in files if f.match(pattern)]
    else:
        files = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    files = sorted(files, key=lambda f: f.as_posix())
    if not files:
        raise ConfigError(f"{key}={path}: no files match")
    if all(f.stat().st_size == 0 for f in files):
        raise ConfigError(f"{key}={path}: all {len(files)} matching files are empty")
    return files


def fingerprint_documents(documents: Iterable[bytes]) -> str:
    """sha256 over the documents' contents in order (file names left out, so a moved corpus keeps
    its key)."""
    digest = hashlib.sha256()
    for content in documents:
        digest.update(len(content).to_bytes(8, "little"))
        digest.update(content)
    return digest.hexdigest()


def corpus_key(
    source: str, fingerprint: str, tokenizer: str, bpe_vocab_size: int, val_tokens: int
) -> str:
    """Cache directory name. A bpe tokenizer's training text depends on val_tokens (see
    `prepare_corpus`), so that is part of its key."""
    if tokenizer == "bpe":
        tokenizer = f"bpe{bpe_vocab_size}-val{val_tokens}"
    return f"{source}-{fingerprint[:16]}-{tokenizer}"


def prepare_corpus(
    out_dir: str | Path,
    documents: Documents,
    *,
    source: str,
    fingerprint: str,
    tokenizer: str,
    bpe_vocab_size: int,
    val_tokens: int,
    shard_tokens: int = SHARD_TOKENS,
) -> dict:
    """Tokenize `documents` into shards plus meta.json (and tokenizer.json for bpe) in `out_dir`,
    unless a finished corpus is already there; returns its meta.

    Several processes may call this at once: an exclusive lock on a file beside `out_dir` lets one
    build while the others wait, and the build goes to a temporary directory renamed into place
    when complete, so a crash never leaves a half-written corpus.
    """
    out_dir = Path(out_dir).expanduser()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(out_dir.parent / f".{out_dir.name}.lock"):
        if (out_dir / META_FILE).exists():
            meta = json.loads((out_dir / META_FILE).read_text())
            found = (meta["fingerprint"], meta["tokenizer"], meta.get("bpe_vocab_size"))
            if found != (fingerprint, tokenizer, bpe_vocab_size if tokenizer == "bpe" else None):
                raise ConfigError(
                    f"{out_dir} already holds a different corpus ({meta['source']}, "
                    f"{meta['tokenizer']}, fingerprint {meta['fingerprint'][:16]})"
                )
            return meta
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ConfigError(f"{out_dir} exists, is not empty and holds no {META_FILE}")
        building = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        try:
            meta = _tokenize(
                building, documents, tokenizer, bpe_vocab_size, val_tokens, shard_tokens
            )
            meta = {"source": source, "fingerprint": fingerprint, **meta}
            (building / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            if out_dir.exists():
                out_dir.rmdir()  # empty, checked above
            os.rename(building, out_dir)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return meta


def tokenizer_digest(corpus_dir: Path) -> str | None:
    """sha256 of a trained tokenizer's file (None for the fixed ones): two BPE tokenizers of one
    size trained on different text share a name and a vocabulary size, not their ids."""
    path = corpus_dir / TOKENIZER_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def load_tokenizer(corpus_dir: Path, name: str) -> Tokenizer:
    if name == "bpe":
        return BPETokenizer.load(corpus_dir / TOKENIZER_FILE)
    return GPT2Tokenizer() if name == "gpt2" else ByteTokenizer()


def _tokenize(
    out_dir: Path,
    documents: Documents,
    tokenizer_name: str,
    bpe_vocab_size: int,
    val_tokens: int,
    shard_tokens: int,
) -> dict:
    meta: dict = {"tokenizer": tokenizer_name}
    if tokenizer_name == "bpe":
        # The validation split is the corpus's last val_tokens tokens, which span at most
        # MAX_BPE_TOKEN_BYTES * val_tokens bytes: leaving those bytes out of BPE training keeps
        # the tokenizer from having seen validation text.
        n_bytes = sum(len(d) for d in documents())
        held_out = MAX_BPE_TOKEN_BYTES * val_tokens
        if n_bytes <= held_out:
            raise ConfigError(
                f"data.val_tokens={val_tokens}: bpe training leaves out the last {held_out} bytes "
                f"(16 per validation token) but the corpus has only {n_bytes}"
            )
        tokenizer = BPETokenizer.train(
            _leading_text(documents(), n_bytes - held_out), bpe_vocab_size
        )
        tokenizer.save(out_dir / TOKENIZER_FILE)
        meta |= {"bpe_vocab_size": bpe_vocab_size, "bpe_trained_on_bytes": n_bytes - held_out}
    else:
        tokenizer = load_tokenizer(out_dir, tokenizer_name)

    n_bytes = n_tokens = n_documents = n_shards = n_pending = 0
    pending: list[np.ndarray] = []
    for chunk in _chunks(documents(), 1024):
        n_bytes += sum(len(d) for d in chunk)
        n_documents += len(chunk)
        for ids in tokenizer.encode(chunk):
            n_tokens += len(ids)
            while len(ids):  # fill each shard with exactly shard_tokens tokens
                room = shard_tokens - n_pending
                pending.append(ids[:room])
                n_pending += len(pending[-1])
                ids = ids[room:]
                if n_pending == shard_tokens:
                    write_shard(out_dir / f"tokens_{n_shards:06d}.bin", np.concatenate(pending))
                    n_shards, pending, n_pending = n_shards + 1, [], 0
    if pending:
        write_shard(out_dir / f"tokens_{n_shards:06d}.bin", np.concatenate(pending))
        n_shards += 1
    if n_tokens == 0:
        raise ConfigError("the corpus has no tokens: every document is empty")
    return meta | {
        "vocab_size": tokenizer.vocab_size,
        "n_tokens": n_tokens,
        "n_bytes": n_bytes,
        "n_documents": n_documents,
        "n_shards": n_shards,
        "bytes_per_token": n_bytes / n_tokens,
    }


def _leading_text(documents: Iterable[bytes], n_bytes: int) -> Iterator[str]:
    """The documents as text, cut off after their first n_bytes bytes."""
    for document in documents:
        if n_bytes <= 0:
            return
        yield document[:n_bytes].decode("utf-8", errors="replace")
        n_bytes -= len(document)


def _chunks(documents: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for document in documents:
        chunk.append(document)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
