"""Training on a CUDA GPU: bf16 against fp32, compiled against eager, resume, and the chunked loss.

Skipped without CUDA; run on a GPU machine with `python -m pytest -m gpu tests/test_gpu.py`.
Tolerances allow for bf16 rounding and for CUDA's non-deterministic kernels (the embedding
backward's atomic adds), so a resumed run continues its curve closely but not bit for bit.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from scalinglab.ops import chunked_cross_entropy
from scalinglab.train import train
from tests.conftest import compose_train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# A small real training run on the GPU: seconds per job.
GPU_TRAINING = [
    "trainer=gpu",
    "model=gpt_micro",
    "data=synthetic",
    "data.n_train_tokens=1048576",
    "data.val_tokens=16384",
    "data.batch_size=32",
    "data.seq_len=128",
    "trainer.max_steps=50",
    "trainer.val_check_interval=25",
    "trainer.log_every_n_steps=1",
    "scheduler.warmup_steps=5",
]


def train_losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "metrics.csv").open() as f:
        return {int(float(r["step"])): float(r["train/loss"]) for r in csv.DictReader(f)}


def test_bf16_training_tracks_fp32(tmp_path: Path) -> None:
    """After 50 steps the bf16-mixed run's validation loss is within 0.05 nats of the fp32 run's
    (about 1% of a loss near 3-4 nats), and so is every logged training loss from step 10 on."""
    fp32 = train(
        compose_train(*GPU_TRAINING, "trainer.precision=32-true", output_dir=tmp_path / "a")
    )
    bf16 = train(
        compose_train(*GPU_TRAINING, "trainer.precision=bf16-mixed", output_dir=tmp_path / "b")
    )
    assert fp32["status"] == bf16["status"] == "completed"
    assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], abs=0.05)
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert a[50] < a[1] - 0.5  # it learned something, so agreement is not agreement at chance
    for step in range(10, 51):
        assert b[step] == pytest.approx(a[step], abs=0.05), step


def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    eager = train(compose_train(*GPU_TRAINING, "compile=false", output_dir=tmp_path / "eager"))
    compiled = train(compose_train(*GPU_TRAINING, "compile=true", output_dir=tmp_path / "compiled"))
    assert compiled["status"] == eager["status"] == "completed"
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], abs=0.02)


def test_resumed_run_continues_its_loss_curve(tmp_path: Path) -> None:
    straight = train(compose_train(*GPU_TRAINING, output_dir=tmp_path / "straight"))
    crash = [*GPU_TRAINING, "+callbacks.crash._target_=tests.test_train.CrashAt"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_train(*crash, "+callbacks.crash.step=30", output_dir=tmp_path / "resumed"))
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 25

    resumed = train(compose_train(*GPU_TRAINING, output_dir=tmp_path / "resumed"))
    assert resumed["status"] == "completed" and resumed["attempts"] == 2
    assert resumed["steps"] == straight["steps"] == 50
    a, b = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, 51))
    for step in range(26, 51):  # no jump back to a fresh model's loss after the restart
        assert b[step] == pytest.approx(a[step], abs=0.02), step
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], abs=0.02)


class NoSyncAfterFirstStep(pl.Callback):
    """Raises at any host-device synchronisation from the second step to the end of the last (whose
    figures are read back at once), so that the test shows where one happens. Keeps every step's
    loss, on the GPU, to be read after training."""

    losses: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == 1:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, *args) -> None:
        type(self).losses[trainer.global_step] = outputs["loss"].detach().clone()
        if trainer.global_step == trainer.max_steps:
            torch.cuda.set_sync_debug_mode(0)

    def on_exception(self, *args) -> None:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])
def test_training_steps_never_wait_for_the_gpu(tmp_path: Path, compile: bool) -> None:
    """A job logging every step queues its steps on the GPU without waiting for it (a wait leaves the
    GPU idle while the host prepares the next step), and its rows, written once the GPU is done with
    their steps, still hold each its own step's loss, and throughput. Validation and the checkpoint
    come after the last step here: they do wait."""
    NoSyncAfterFirstStep.losses = {}
    result = train(
        compose_train(
            *GPU_TRAINING,
            f"compile={compile}",
            "trainer.val_check_interval=50",
            f"+callbacks.no_sync._target_={__name__}.NoSyncAfterFirstStep",
            output_dir=tmp_path,
        )
    )
    assert result["status"] == "completed"
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["step"])) for r in rows] == list(range(1, 51))
    for row in rows:
        step_loss = NoSyncAfterFirstStep.losses[int(float(row["step"]))].item()
        assert float(row["train/loss"]) == pytest.approx(step_loss, rel=1e-6), row["step"]
    assert all(float(r["perf/tokens_per_sec"]) > 0 and r["perf/mfu"] for r in rows[1:])


# ---- the chunked loss on the GPU ---------------------------------------------------------------


def gpu_inputs(n: int, d: int, v: int):
    gen = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(n, d, device="cuda", generator=gen, requires_grad=True)
    weight = (torch.randn(v, d, device="cuda", generator=gen) / d**0.5).requires_grad_()
    targets = torch.randint(0, v, (n,), device="cuda", generator=gen)
    return hidden, weight, targets


def test_chunked_loss_under_bf16_autocast_and_compile() -> None:
    hidden, weight, targets = gpu_inputs(4096, 128, 50304)
    results = {}
    for name, fn in {
        "reference": lambda h, w, t: F.cross_entropy(F.linear(h, w).float(), t),
        "chunked": chunked_cross_entropy,
        "compiled": torch.compile(chunked_cross_entropy),
    }.items():
        hidden.grad = weight.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fn(hidden, weight, targets)
        loss.backward()
        results[name] = (loss.detach(), hidden.grad.clone(), weight.grad.clone())
    ref = results["reference"]
    for name in ("chunked", "compiled"):
        loss, grad_h, grad_w = results[name]
        assert loss.dtype == grad_h.dtype == grad_w.dtype == torch.float32
        torch.testing.assert_close(loss, ref[0], rtol=1e-3, atol=1e-3)
        for got, want in ((grad_h, ref[1]), (grad_w, ref[2])):
            torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-2 * want.abs().max().item())


def test_chunked_loss_peak_memory_is_a_chunk_not_the_logits() -> None:
    """64k tokens x 50304 classes: 6.6 GB of bf16 logits (13 GB as fp32) if materialised."""
    n, v, chunk_size = 65536, 50304, 2048
    hidden, weight, targets = gpu_inputs(n, 128, v)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = chunked_cross_entropy(hidden, weight, targets, chunk_size)
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - baseline
    # A chunk's logits: bf16 + fp32 + the softmax's fp32 temporaries, about 4 x 0.4 GB at most.
    assert extra < 2e9, f"{extra / 1e9:.2f} GB extra"
    assert extra < 0.25 * n * v * 2
