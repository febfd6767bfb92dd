"""Token shards in the llm.c / modded-nanogpt format, so FineWeb shards made by those tools load as-is.

A shard is a header of 256 little-endian int32 (magic 20240520, version 1, token count, then zeros)
followed by the tokens as little-endian uint16.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scalinglab.errors import ConfigError

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_VOCAB = 2**16  # tokens are stored as uint16


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write `tokens` as one shard; written to a temporary file and renamed, so readers never see
    half a shard."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= MAX_VOCAB):
        raise ValueError(f"{path}: token ids must lie in [0, {MAX_VOCAB}) to fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2", copy=False).tobytes())
    os.replace(tmp, path)


def read_shard(path: str | Path) -> np.ndarray:
    """Memory-map one shard's tokens, after checking its header against the file size."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ConfigError(
            f"shard {path}: {size} bytes is shorter than the {HEADER_BYTES}-byte header"
        )
    magic, version, n_tokens = np.fromfile(path, dtype="<i4", count=3)
    if magic != SHARD_MAGIC:
        raise ConfigError(f"shard {path}: magic number {magic} is not {SHARD_MAGIC}")
    if version != SHARD_VERSION:
        raise ConfigError(f"shard {path}: version {version} is not {SHARD_VERSION}")
    if size != HEADER_BYTES + 2 * n_tokens:
        raise ConfigError(
            f"shard {path}: header says {n_tokens} tokens but the file holds "
            f"{(size - HEADER_BYTES) / 2:g} (truncated or corrupt)"
        )
    if n_tokens == 0:  # mmap cannot map zero bytes
        return np.zeros(0, dtype="<u2")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(int(n_tokens),))
