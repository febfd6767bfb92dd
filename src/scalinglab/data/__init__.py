"""Token data: sources (Python stdlib, local text, synthetic Markov language, llm.c shards, Hugging
Face datasets), tokenizers, the shard format and the cache that tokenizes each corpus once."""

from scalinglab.data.datamodule import (
    HFDataModule,
    PythonStdlibDataModule,
    ShardsDataModule,
    SyntheticDataModule,
    TextDataModule,
    TokenDataModule,
)
from scalinglab.data.powerlaw_language import PowerLawDataModule
from scalinglab.data.shards import read_shard, write_shard

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
