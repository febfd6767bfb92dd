"""Token data: sources (Python stdlib, local text, synthetic Markov language, llm.c shards, Hugging
Face datasets), tokenizers, the shard format and the cache that tokenizes each corpus once."""

from scalinglab.data.datamodule import TokenDataModule
from scalinglab.data.powerlaw_language import PowerLawDataModule
from scalinglab.data.shards import read_shard, write_shard
from scalinglab.data.sources import (
    HFDataModule,
    PythonStdlibDataModule,
    ShardsDataModule,
    SyntheticDataModule,
    TextDataModule,
)

__all__ = [
    "HFDataModule",
    "PowerLawDataModule",
    "PythonStdlibDataModule",
    "ShardsDataModule",
    "SyntheticDataModule",
    "TextDataModule",
    "TokenDataModule",
    "read_shard",
    "write_shard",
]
