"""`scaling-prepare`: tokenize a corpus into llm.c-format shards ahead of training.

scaling-prepare --source hf --path data.jsonl --tokenizer bpe --cache-dir CACHE
    fills the cache that `data=hf data.path=data.jsonl data.tokenizer=bpe` reads, so the jobs
    of a sweep start without tokenizing;
scaling-prepare --source hf --path DIR --tokenizer bytes --out SHARDS
    writes shards (and meta.json) that `data=shards data.path=SHARDS` reads.
"""

from __future__ import annotations

import argparse
import json
import sys

from scalinglab.data.corpus import META_FILE, SHARD_TOKENS
from scalinglab.data.sources import HFDataModule, PythonStdlibDataModule, TextDataModule
from scalinglab.errors import ConfigError

SOURCES = {"hf": HFDataModule, "text": TextDataModule, "python_stdlib": PythonStdlibDataModule}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scaling-prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=sorted(SOURCES), required=True)
    parser.add_argument("--path", help="dataset directory, file or glob (hf, text)")
    parser.add_argument("--text-field", default="text", help="hf: the column holding the text")
    parser.add_argument("--split", default="train", help="hf: the split of a DatasetDict")
    parser.add_argument(
        "--max-bytes", type=int, default=8_000_000, help="python_stdlib: bytes read"
    )
    parser.add_argument("--tokenizer", choices=["bytes", "bpe", "gpt2"], default="bytes")
    parser.add_argument("--bpe-vocab-size", type=int, default=4096)
    parser.add_argument(
        "--val-tokens",
        type=int,
        default=65_536,
        help="as data.val_tokens (bpe trains without them)",
    )
    parser.add_argument("--shard-tokens", type=int, default=SHARD_TOKENS)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="directory for the shards (read with data=shards)")
    where.add_argument("--cache-dir", help="the cache that data=<source> reads (paths.cache_dir)")
    args = parser.parse_args(argv)

    source_args = {
        "hf": {"path": args.path, "text_field": args.text_field, "split": args.split},
        "text": {"path": args.path},
        "python_stdlib": {"max_bytes": args.max_bytes},
    }[args.source]
    try:
        datamodule = SOURCES[args.source](
            **source_args,
            tokenizer=args.tokenizer,
            bpe_vocab_size=args.bpe_vocab_size,
            cache_dir=args.cache_dir,
            val_tokens=args.val_tokens,
            seq_len=1,  # a window size only matters to batches, not to the shards
        )
        out_dir = datamodule.prepare(args.out, shard_tokens=args.shard_tokens)
    except ConfigError as error:
        print(f"scaling-prepare: error: {error}", file=sys.stderr)
        return 2
    meta = json.loads((out_dir / META_FILE).read_text())
    print(json.dumps({"out": str(out_dir), **meta}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
