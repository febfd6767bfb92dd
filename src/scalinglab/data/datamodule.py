"""LightningDataModules over token sources. Every source ends as a token sequence split the same way:

- validation: the last `val_tokens` tokens, cut into non-overlapping windows of seq_len+1 tokens;
  the same for every job of a sweep whatever its seed or batch size, so losses are comparable.
- training: everything before, cut into non-overlapping windows of seq_len+1 tokens, visited in a
  seeded permutation per epoch. Batch k is a pure function of (seed, k), so a run resumed at
  global_step k sees exactly the batches an uninterrupted run would.

A batch is (x, y), int64 tensors of shape (batch_size, seq_len), y being x shifted by one.

Under `objective="mlm"` (masked language modelling, BERT's recipe) x is a window's first seq_len
tokens with 15% of its positions chosen (round(0.15 seq_len), at least one, the same count in every
window) and, of those, 80% replaced by the mask token (id: the data's vocabulary size), 10% by a
random token, 10% left unchanged; y holds the original token at the chosen positions and
IGNORE_INDEX elsewhere, so the loss is in nats per masked token. A training batch's masks are a pure
function of (seed, batch index), like its windows; a validation window's masks of its index alone,
so every job of a sweep, whatever its seed or batch size, scores the same masked positions.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from scalinglab.errors import ConfigError
from scalinglab.guards import require_seed
from scalinglab.ops import IGNORE_INDEX

DEFAULT_CACHE_DIR = "~/.cache/scalinglab"
OBJECTIVES = ("clm", "mlm")  # causal (next-token) or masked language modelling
MASK_FRACTION = 0.15  # BERT (Devlin et al. 2019): the positions of a window that are predicted
MASK_TOKEN_SHARE, RANDOM_TOKEN_SHARE = 0.8, 0.1  # of those; the remaining 10% stay unchanged
# Keys of the masks' seeds: (seed, TRAIN_MASKS, batch) and (VAL_MASKS, window), streams that the
# windows' permutations (seed, epoch) never share.
TRAIN_MASKS, VAL_MASKS = 1, 2


def masking_generator(*key: int) -> torch.Generator:
    """A torch generator seeded by a tuple of integers (numpy's SeedSequence mixes them)."""
    seed = np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


def mask_tokens(
    tokens: torch.Tensor, mask_token_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of (n, T) windows: (inputs, targets), targets IGNORE_INDEX where unmasked.

    Random replacements are drawn from the data's tokens [0, mask_token_id).
    """
    n, length = tokens.shape
    n_chosen = max(1, round(MASK_FRACTION * length))
    order = torch.rand(n, length, generator=generator).argsort(dim=1)
    chosen = torch.zeros(n, length, dtype=torch.bool).scatter_(1, order[:, :n_chosen], True)
    action = torch.rand(n, length, generator=generator)
    random_tokens = torch.randint(mask_token_id, (n, length), generator=generator)
    inputs = torch.where(chosen & (action < MASK_TOKEN_SHARE), mask_token_id, tokens)
    randomised = chosen & (action >= MASK_TOKEN_SHARE)
    randomised &= action < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE
    inputs = torch.where(randomised, random_tokens, inputs)
    return inputs, torch.where(chosen, tokens, IGNORE_INDEX)


class TokenSequence:
    """Token arrays (e.g. memory-mapped shards) read as one sequence, without copying them."""

    def __init__(
        self, parts: Sequence[np.ndarray], start: int = 0, stop: int | None = None
    ) -> None:
        self.parts = [part for part in parts if len(part)]
        self.offsets = np.cumsum([0, *map(len, self.parts)])
        self.start = start
        self.stop = int(self.offsets[-1]) if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getstate__(self) -> dict:
        # Memory-mapped shards go to spawned DataLoader workers as file names, not token copies.
        state = self.__dict__.copy()
        state["parts"] = [
            (part.filename, part.offset, part.shape) if isinstance(part, np.memmap) else part
            for part in self.parts
        ]
        return state

    def __setstate__(self, state: dict) -> None:
        state["parts"] = [
            np.memmap(part[0], dtype="<u2", mode="r", offset=part[1], shape=part[2])
            if isinstance(part, tuple)
            else part
            for part in state["parts"]
        ]
        self.__dict__.update(state)

    def span(self, start: int, stop: int) -> TokenSequence:
        return TokenSequence(self.parts, self.start + start, self.start + stop)

    def read(self, start: int, length: int) -> np.ndarray:
        position, pieces = self.start + start, []
        while length > 0:
            part = int(np.searchsorted(self.offsets, position, side="right")) - 1
            local = position - self.offsets[part]
            pieces.append(self.parts[part][local : local + length])
            position, length = position + len(pieces[-1]), length - len(pieces[-1])
        return np.concatenate(pieces).astype(np.int64)

    def windows(self, indices: Sequence[int], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x, y) batch made of the given non-overlapping windows of seq_len+1 tokens."""
        window = seq_len + 1
        starts = self.start + np.asarray(indices, dtype=np.int64) * window
        tokens = np.empty((len(starts), window), dtype=np.int64)
        # One gather per part for the windows inside it (a fifth of the time of reading them one by
        # one: host time that small models wait for each step), one by one for those across two.
        part_of = np.searchsorted(self.offsets, starts, side="right") - 1
        inside = starts + window <= self.offsets[part_of + 1]
        for part in np.unique(part_of[inside]):
            rows = np.flatnonzero(inside & (part_of == part))
            local = starts[rows] - self.offsets[part]
            tokens[rows] = self.parts[part][local[:, None] + np.arange(window)]
        for row in np.flatnonzero(~inside):
            tokens[row] = self.read(int(starts[row]) - self.start, window)
        tokens = torch.from_numpy(tokens)
        # Contiguous, not views: a strided tensor reaches the GPU through a pageable temporary,
        # a copy that waits for the GPU to finish its queue, however the batch was pinned.
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


class TrainBatches(IterableDataset):
    """The endless stream of training batches first_batch, first_batch + stride, ...

    Windows are visited in a fresh seeded permutation each epoch, so no token repeats before the
    corpus is used up. DataLoader workers take turns (worker w yields every n_workers-th batch),
    which the DataLoader's round-robin turns back into the stream's order.
    """

    def __init__(
        self,
        tokens: TokenSequence,
        batch_size: int,
        seq_len: int,
        seed: int,
        first_batch: int = 0,
        stride: int = 1,
        mask_token_id: int | None = None,
    ) -> None:
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
        self.first_batch, self.stride = first_batch, stride
        self.mask_token_id = mask_token_id  # None: next-token batches; else masked (mlm)
        self.n_windows = len(tokens) // (seq_len + 1)
        self._permutations: dict[int, np.ndarray] = {}

    def window_indices(self, batch: int) -> np.ndarray:
        positions = np.arange(batch * self.batch_size, (batch + 1) * self.batch_size)
        epochs, positions = np.divmod(positions, self.n_windows)
        return np.array([self._permutation(e)[p] for e, p in zip(epochs, positions, strict=True)])

    def batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.tokens.windows(self.window_indices(batch), self.seq_len)
        if self.mask_token_id is None:
            return x, y
        generator = masking_generator(self.seed, TRAIN_MASKS, batch)
        return mask_tokens(x, self.mask_token_id, generator)

    def __iter__(self):
        worker = get_worker_info()
        worker_id, n_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for n in itertools.count(worker_id, n_workers):
            yield self.batch(self.first_batch + n * self.stride)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) > 1:  # a batch spans at most two epochs
                self._permutations.pop(min(self._permutations))
            rng = np.random.default_rng([self.seed, int(epoch)])
            self._permutations[epoch] = rng.permutation(self.n_windows)
        return self._permutations[epoch]


class ValBatches(Dataset):
    """The validation windows in order, batch_size at a time (the last batch may be smaller, so the
    set of windows does not depend on batch_size)."""

    def __init__(
        self,
        tokens: TokenSequence,
        batch_size: int,
        seq_len: int,
        mask_token_id: int | None = None,
    ) -> None:
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.n_windows = len(tokens) // (seq_len + 1)
        self.mask_token_id = mask_token_id  # None: next-token batches; else masked (mlm)

    def __len__(self) -> int:
        return math.ceil(self.n_windows / self.batch_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        windows = range(index * self.batch_size, min((index + 1) * self.batch_size, self.n_windows))
        x, y = self.tokens.windows(windows, self.seq_len)
        if self.mask_token_id is None:
            return x, y
        masked = [
            mask_tokens(row[None], self.mask_token_id, masking_generator(VAL_MASKS, window))
            for row, window in zip(x, windows, strict=True)
        ]
        return torch.cat([m[0] for m in masked]), torch.cat([m[1] for m in masked])


class TokenDataModule(pl.LightningDataModule):
    """Batches of token windows from one source; subclasses say where the tokens come from by
    implementing `load_splits`."""

    name = "tokens"

    def __init__(
        self,
        batch_size: int = 16,
        seq_len: int = 128,
        val_tokens: int = 65_536,
        seed: int = 0,
        num_workers: int = 0,
        objective: str = "clm",
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ConfigError(
                f"data.objective={objective!r} must be one of {', '.join(OBJECTIVES)}"
            )
        for key, value in [
            ("batch_size", batch_size),
            ("seq_len", seq_len),
            ("val_tokens", val_tokens),
        ]:
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"data.{key}={value!r} must be a positive integer")
        if val_tokens < seq_len + 1:
            raise ConfigError(
                f"data.val_tokens={val_tokens} is less than one window (data.seq_len+1 = {seq_len + 1})"
            )
        require_seed("data.seed", seed)
        if num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers} must be >= 0")
        self.batch_size, self.seq_len, self.val_tokens = batch_size, seq_len, val_tokens
        self.seed, self.num_workers, self.objective = seed, num_workers, objective
        self.train_split: TokenSequence | None = None
        self.val_split: TokenSequence | None = None
        self.info: dict = {}

    def load_splits(self) -> tuple[TokenSequence, TokenSequence, dict]:
        """(train tokens, val tokens, info) where info holds fingerprint, tokenizer, vocab_size,
        bytes_per_token, irreducible_loss and anything else worth recording."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_split is not None:
            return
        self.train_split, self.val_split, self.info = self.load_splits()
        window = self.seq_len + 1
        if len(self.train_split) < self.batch_size * window:
            raise ConfigError(
                f"data ({self.name}): {len(self.train_split)} training tokens are fewer than one batch "
                f"(data.batch_size * (data.seq_len+1) = {self.batch_size * window})"
            )
        if len(self.val_split) < window:
            raise ConfigError(
                f"data ({self.name}): {len(self.val_split)} validation tokens are fewer than one "
                f"window (data.seq_len+1 = {window})"
            )

    @cached_property
    def val_fingerprint(self) -> str:
        """sha256 over the validation tokens (as little-endian uint32): the set every loss is
        measured on, whatever the training split (a synthetic one's size, a corpus's head)."""
        tokens = self.val_split.read(0, len(self.val_split))
        return hashlib.sha256(np.asarray(tokens, dtype="<u4").tobytes()).hexdigest()

    @property
    def vocab_size(self) -> int:
        """The token ids its batches may hold: the data's, and the mask token under mlm."""
        if not self.info:
            raise RuntimeError("vocab_size is known after setup()")
        return self.info["vocab_size"] + (self.objective == "mlm")

    @property
    def mask_token_id(self) -> int | None:
        """The mask token (mlm): the id after the data's tokens; None for next-token batches."""
        return self.info["vocab_size"] if self.objective == "mlm" else None

    def metadata(self) -> dict:
        """What run.json records about the data (JSON-serialisable)."""
        if self.train_split is None:
            raise RuntimeError("metadata() is known after setup()")
        metadata = {
            "name": self.name,
            "bytes_per_token": None,
            "irreducible_loss": None,
            **self.info,
            "n_train_tokens": len(self.train_split),
            "n_val_tokens": len(self.val_split),
            "val_fingerprint": self.val_fingerprint,
            "n_val_windows": len(self.val_split) // (self.seq_len + 1),
        }
        if self.objective == "mlm":  # a data's known floor is a next-token one
            metadata |= {"mask_token_id": self.mask_token_id, "irreducible_loss": None}
        return metadata

    def train_dataloader(self) -> DataLoader:
        assert self.train_split is not None, "call setup() first"
        trainer = self.trainer
        if trainer is None:
            first_batch, stride = 0, 1
        else:
            # Lightning restores global_step from a checkpoint before asking for this loader; each
            # device takes every world_size-th batch of the one stream.
            micro_step = trainer.global_step * trainer.accumulate_grad_batches
            first_batch = micro_step * trainer.world_size + trainer.global_rank
            stride = trainer.world_size
        batches = TrainBatches(
            self.train_split,
            self.batch_size,
            self.seq_len,
            self.seed,
            first_batch,
            stride,
            self.mask_token_id,
        )
        return DataLoader(
            batches,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_unchanged,
            pin_memory=self._on_gpu(),
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_split is not None, "call setup() first"
        val_batches = ValBatches(self.val_split, self.batch_size, self.seq_len, self.mask_token_id)
        return DataLoader(
            val_batches, batch_size=None, collate_fn=_unchanged, pin_memory=self._on_gpu()
        )

    def _on_gpu(self) -> bool:
        # Batches in pinned memory copy to the GPU asynchronously; from pageable memory the copy
        # waits for the GPU to finish the previous step, which leaves it idle between steps.
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"


def _unchanged(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches come whole from the datasets; the DataLoader's default would make tuples lists."""
    return batch
