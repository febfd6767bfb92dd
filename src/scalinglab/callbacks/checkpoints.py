"""Checkpoints: `Checkpoints` keeps `checkpoints/last.ckpt` (every n steps, at the final step and
at SIGTERM) and the extra checkpoints WSD branches start from; `VerifiedCheckpointIO` writes each
one whole, with a sha256 beside it, and keeps the previous one, so that a damaged checkpoint is
never loaded (`resume_point`). Each says whose it is (its `run_id`, beside the model shape the
module's hyperparameters hold), and `check_checkpoint` holds it to its run's record."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from scalinglab.errors import ConfigError
from scalinglab.records import set_aside, write_atomic

log = logging.getLogger("scalinglab")

LAST = "last.ckpt"


def checksum_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def previous_path(path: Path) -> Path:
    """Where a checkpoint's predecessor is kept: last.ckpt -> last.previous.ckpt."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


class _Hashing:
    """A file that hashes what is written to it (torch.save streams the checkpoint through it)."""

    def __init__(self, f: IO[bytes], sha256: Any):
        self.f, self.sha256 = f, sha256

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def save_verified(checkpoint: dict[str, Any], path: Path) -> None:
    """Write a checkpoint whole (a temporary file beside it, renamed), then its sha256 beside it;
    the checkpoint it replaces is kept as `previous_path`, with its checksum."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sha256 = hashlib.sha256()

    def write(f: IO[bytes]) -> None:
        torch.save(checkpoint, _Hashing(f, sha256))  # type: ignore[arg-type]

    def keep_previous() -> None:
        if not path.exists():
            return
        previous = previous_path(path)
        checksum_path(previous).unlink(missing_ok=True)
        os.replace(path, previous)
        if checksum_path(path).exists():
            digest = checksum_path(path).read_text().split()[0]
            write_checksum(previous, digest)
            checksum_path(path).unlink()

    write_atomic(path, write, before_replace=keep_previous)
    write_checksum(path, sha256.hexdigest())


def write_checksum(path: Path, digest: str) -> None:
    """`path.sha256`, as sha256sum writes it (`sha256sum -c` checks it)."""
    line = f"{digest}  {path.name}\n"
    write_atomic(checksum_path(path), lambda f: f.write(line.encode()))


def damage(path: Path) -> str | None:
    """Why a checkpoint cannot be trusted (None: its bytes are the ones written)."""
    checksum = checksum_path(path)
    if not checksum.exists():
        return "no checksum beside it: its write never completed"
    expected = checksum.read_text().split()[:1]
    if expected != [sha256_of(path)]:
        return "its sha256 differs from the one written with it"
    return None


def verified(path: Path) -> bool:
    """Whether a checkpoint is intact; rank 0 sets a damaged one aside (renamed, with its
    checksum), the job's other ranks skip it as well."""
    try:
        why = damage(path)
    except FileNotFoundError:  # set aside by rank 0 meanwhile
        return False
    if why is None:
        return True
    if rank_zero_only.rank != 0:
        return False
    set_aside(path, why)
    if checksum_path(path).exists():
        os.replace(checksum_path(path), checksum_path(path).with_suffix(".sha256.damaged"))
    return False


def resume_point(dirpath: Path) -> Path | None:
    """The newest intact checkpoint of a job (last.ckpt, else the one before it); None: start
    from scratch. Damaged ones are named in the log and set aside."""
    for path in (dirpath / LAST, previous_path(dirpath / LAST)):
        if path.exists() and verified(path):
            return path
    return None


def check_checkpoint(checkpoint: dict[str, Any], record: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint that is not its run's: a model shape (the module's hyperparameters) or a
    run_id other than the run record's, the first difference named. What the record or the
    checkpoint lacks (one from before run_id was saved) is not compared."""
    # As run.json holds it (write_json_atomic: tuples as lists, default=str).
    shape = checkpoint.get("hyper_parameters", {}).get("model") or {}
    shape = json.loads(json.dumps(shape, default=str))
    recorded = record.get("model") or {}
    pairs = []
    if shape and recorded:
        pairs = [(f"model.{k}", shape.get(k), recorded.get(k)) for k in {**recorded, **shape}]
    if checkpoint.get("run_id") and record.get("run_id"):
        pairs.append(("run_id", checkpoint["run_id"], record["run_id"]))
    for name, ours, theirs in pairs:
        if ours != theirs:
            raise ConfigError(
                f"{path} is not this run's: {name}={ours} in the checkpoint, {theirs} in run.json"
            )


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing through `save_verified` (whole or not at all, with a
    checksum, the previous one kept). Rank 0 alone calls it. It loads with weights_only=True."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        save_verified(checkpoint, Path(path))

    def load_checkpoint(
        self,
        path: Any,
        map_location: Any = lambda storage, loc: storage,  # Lightning's: tensors on the CPU
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # A checkpoint is data, never code, whatever the caller asks: a strategy that restores
        # after setup gets no weights_only from trainer.fit, and None is torch's default, which
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns into False.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def validates_now(trainer: pl.Trainer) -> bool:
    """Whether the fit validates after the step that has just ended (called at its
    on_train_batch_end): Lightning's own decision, a private method (2.x)."""
    loop, fetcher = trainer.fit_loop.epoch_loop, trainer.fit_loop._data_fetcher
    return fetcher is not None and bool(loop._should_check_val_fx(fetcher))


class Checkpoints(pl.callbacks.Checkpoint):
    """`dirpath/last.ckpt` after every `every_n_train_steps`-th optimizer step, the final step and
    the step a SIGTERM stops at; and one at each step of `save_at` ({step: path}, the points WSD
    decay branches start from). Each holds the job's `run_id` (set by the job)."""

    def __init__(
        self,
        dirpath: str | Path,
        every_n_train_steps: int,
        save_at: dict[int, str] | None = None,
    ):
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = int(every_n_train_steps)
        self.save_at = dict(save_at or {})
        self.run_id: str | None = None
        self._last_saved = -1
        self._held_sigterm = False
        self._after_validation: int | None = None  # a due step whose validation runs first

    @property
    def last(self) -> Path:
        return self.dirpath / LAST

    def _save(self, trainer: pl.Trainer, path: Path) -> None:
        trainer.save_checkpoint(path, weights_only=False)  # the full state: resumable
        if path == self.last:
            self._last_saved = trainer.global_step

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Whose it is: scaling-eval and scaling-export refuse another run's (check_checkpoint).
        checkpoint["run_id"] = self.run_id

    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        step = trainer.global_step
        due = step % self.every_n_train_steps == 0 or step >= trainer.max_steps
        if due and step > self._last_saved:
            if validates_now(trainer):
                self._after_validation = step  # see on_validation_end
            else:
                self._save(trainer, self.last)
        path = self.save_at.get(step)
        if path and not Path(path).exists():
            self._save(trainer, Path(path))

    def _save_after_validation(self, trainer: pl.Trainer) -> None:
        if self._after_validation == trainer.global_step > self._last_saved:
            self._save(trainer, self.last)
        self._after_validation = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_after_validation(trainer)  # a validation foreseen that did not run

    def on_validation_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        # Lightning stops a validation at a SIGTERM, and a resume from this step skips its
        # validation: the row would be lost for good. Hold the signal until the validation has
        # logged, then let Lightning stop at the step's end (training_epoch_loop checks there).
        # Lightning exposes the flag read-only, hence its connector's attribute.
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting and trainer.received_sigterm:
            trainer._signal_connector.received_sigterm = False
            self._held_sigterm = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A step's checkpoint is saved once its validation has logged: saved before it, a job
        # killed during the validation (kill -9, a crash) resumed after the step and never
        # validated it (Lightning skips a restarted step's validation).
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._save_after_validation(trainer)
        if self._held_sigterm:
            log.info(f"SIGTERM during the validation of step {trainer.global_step}: stopping")
            trainer._signal_connector.received_sigterm = True
            self._held_sigterm = False

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # Lightning raises SIGTERMException between steps (or validation batches), where the state
        # is whole: save it, so that the job resumes where the signal stopped it.
        if isinstance(exception, SIGTERMException) and trainer.global_step > self._last_saved:
            self._save(trainer, self.last)
            log.info(f"SIGTERM: saved {self.last} at step {trainer.global_step}")
