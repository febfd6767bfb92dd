"""Tokenizers that turn documents (bytes) into uint16 token ids: `bytes`, `bpe` (trained locally) and
`gpt2` (tiktoken, when installed with its files cached)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from scalinglab.data.shards import MAX_VOCAB
from scalinglab.errors import ConfigError

# A BPE token spans at most this many bytes, so the last `val_tokens` tokens of a corpus lie within
# its last MAX_BPE_TOKEN_BYTES * val_tokens bytes, which BPE training leaves out.
MAX_BPE_TOKEN_BYTES = 16
EOT = "<|endoftext|>"


class ByteTokenizer:
    """Each byte is a token: vocab 256, exactly one byte per token, no document separator."""

    vocab_size = 256

    def encode(self, documents: list[bytes]) -> list[np.ndarray]:
        return [np.frombuffer(document, dtype=np.uint8).astype(np.uint16) for document in documents]

    def decode(self, tokens: Iterable[int]) -> str:
        return bytes(np.asarray(tokens, dtype=np.uint8)).decode("utf-8", errors="replace")


class BPETokenizer:
    """Byte-level BPE from the `tokenizers` library, trained on local text; id 0 is <|endoftext|>,
    which starts every document."""

    eot = 0

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, documents: Iterable[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            max_token_length=MAX_BPE_TOKEN_BYTES,  # ByteLevel maps each byte to one character
            show_progress=False,
        )
        tokenizer.train_from_iterator(documents, trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self._tokenizer.save(str(path))

    def encode(self, documents: list[bytes]) -> list[np.ndarray]:
        texts = [document.decode("utf-8", errors="replace") for document in documents]
        return [
            np.array([self.eot, *e.ids], dtype=np.uint16)
            for e in self._tokenizer.encode_batch(texts)
        ]

    def decode(self, tokens: Iterable[int]) -> str:
        return self._tokenizer.decode([int(t) for t in tokens])


class GPT2Tokenizer:
    """GPT-2's BPE via tiktoken (vocab 50257); <|endoftext|> starts every document, as in llm.c."""

    def __init__(self) -> None:
        try:
            import tiktoken

            self._encoding = tiktoken.get_encoding("gpt2")
        except Exception as error:  # ImportError, or a download attempt failing offline
            raise ConfigError(
                "data.tokenizer=gpt2 needs tiktoken installed with its gpt2 files cached "
                f"(TIKTOKEN_CACHE_DIR): {type(error).__name__}: {error}"
            ) from error
        self.vocab_size: int = self._encoding.n_vocab
        self.eot: int = self._encoding.eot_token

    def encode(self, documents: list[bytes]) -> list[np.ndarray]:
        texts = [document.decode("utf-8", errors="replace") for document in documents]
        return [
            np.array([self.eot, *ids], dtype=np.uint16)
            for ids in self._encoding.encode_ordinary_batch(texts)
        ]

    def decode(self, tokens: Iterable[int]) -> str:
        return self._encoding.decode([int(t) for t in tokens])


Tokenizer = ByteTokenizer | BPETokenizer | GPT2Tokenizer
TOKENIZER_NAMES = ("bytes", "bpe", "gpt2")
# The tokenizers whose vocabulary is fixed (BPE's is data.bpe_vocab_size at most).
FIXED_VOCAB_SIZES = {"bytes": ByteTokenizer.vocab_size, "gpt2": 50257}


def check_tokenizer_config(tokenizer: str, bpe_vocab_size: int) -> None:
    if tokenizer not in TOKENIZER_NAMES:
        raise ConfigError(
            f"data.tokenizer={tokenizer!r} is not one of {', '.join(TOKENIZER_NAMES)}"
        )
    if tokenizer == "bpe" and not 257 <= bpe_vocab_size <= MAX_VOCAB:
        raise ConfigError(
            f"data.bpe_vocab_size={bpe_vocab_size} must lie in [257, {MAX_VOCAB}] "
            "(256 bytes + <|endoftext|>, uint16 shards)"
        )
