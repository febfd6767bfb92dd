"""Sharded training (`trainer=fsdp`: Lightning's ModelParallelStrategy, torch's FSDP2) on the CPU.

Lightning's FSDPStrategy (FSDP1) refuses a CPU accelerator and torch's FSDP1 needs a GPU, but FSDP2
runs on the CPU with gloo, so the sharded path is tested end to end here: a 2-rank job of a multirun
through the local_gpus launcher, its ranks started by torchrun, against one process training on the
same global batch; crashed mid-way, then relaunched to resume from its checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from scalinglab.callbacks import MetricsCSV
from scalinglab.model import GPTConfig
from scalinglab.module import LanguageModel
from scalinglab.records import read_run
from scalinglab.train import train
from tests.conftest import TINY, compose_train
from tests.test_launching import CPU_SLOTS, LAUNCHER, read, sweep

ROOT = Path(__file__).resolve().parents[1]
FSDP_ON_CPU = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"]
# Both runs validate and checkpoint every 2 steps, on 64 validation windows (whole batches on each
# rank, so the ranks' mean is the mean over windows), and clip hard (0.05 moves the final validation
# loss by 1.2e-3 against no clipping), so the gradient norm over all shards is checked as well.
# AdamW is the fused kernel, as on GPUs (on the CPU too since torch 2.4): it steps on DTensor shards.
SAME_RUN = [
    "trainer.val_check_interval=2",
    "data.val_tokens=2112",
    "trainer.gradient_clip_val=0.05",
    "optimizer.fused=true",
]


class CrashOnFirstAttempt(pl.Callback):
    """Fails every rank of the job after `step`, on the job's first attempt only (as run.json
    counts them), so that the same command relaunched runs to the end."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        first_attempt = read_run(Path(trainer.default_root_dir))["attempts"] == 1
        if trainer.global_step == self.step and first_attempt:
            raise RuntimeError(f"simulated crash at step {self.step}")


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs in fresh processes import this module for the crash and test_launching for the probe."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def one_rank_mesh(tmp_path: Path):
    """A one-process gloo group and the 2-D mesh Lightning's ModelParallelStrategy makes."""
    store = f"file://{tmp_path / 'store'}"
    torch.distributed.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    finally:
        torch.distributed.destroy_process_group()


def test_each_block_is_a_unit_of_its_own(one_rank_mesh: Any) -> None:
    torch.manual_seed(0)
    shape = GPTConfig(d_model=64, n_layers=3, n_heads=2, max_seq_len=32, loss_chunk_size=16)
    module = LanguageModel(model=shape.to_dict(), optimizer={}, scheduler={})
    x, y = torch.randint(0, 256, (2, 2, 32)).unbind(0)
    shapes = {name: p.shape for name, p in module.named_parameters()}
    expected = module.loss_fn(x, y)

    module._device_mesh = one_rank_mesh  # what ModelParallelStrategy.setup_environment sets
    module.configure_model()
    module.configure_model()  # Lightning calls it again for trainer.validate: sharded once
    units = [name for name, m in module.named_modules() if isinstance(m, FSDPModule)]
    assert units == ["model", "model.blocks.0", "model.blocks.1", "model.blocks.2"]
    # Global shapes and an unsharded model's names, so optimizer groups and checkpoints are as before.
    assert {name: p.shape for name, p in module.named_parameters()} == shapes
    assert all(isinstance(p, DTensor) for p in module.parameters())
    # The (chunked) loss gathers the root unit's tied embedding and head, as forward would.
    assert module.loss_fn(x, y).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.faults  # an injected crash or signal: CI's faults step
def test_fsdp_job_matches_one_process_and_resumes_after_a_crash(tmp_path: Path) -> None:
    one_process = tmp_path / "one_process"
    reference = train(compose_train(*TINY, *SAME_RUN, "data.batch_size=8", output_dir=one_process))

    crash = [f"+callbacks.crash._target_={__name__}.CrashOnFirstAttempt", "+callbacks.crash.step=5"]
    fsdp = [f"{LAUNCHER}=local_gpus", CPU_SLOTS, *FSDP_ON_CPU, *SAME_RUN, *crash]
    fsdp.append("++model.activation_checkpointing=true")  # the same results, recomputed
    crashed, jobs = sweep(tmp_path, *fsdp)
    assert crashed.returncode != 0 and "simulated crash at step 5" in crashed.stderr
    [job] = jobs
    assert read(job / "run.json")["status"] == "failed"
    # One file, the full state dict under an unsharded run's names and shapes, from step 4.
    checkpoint = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    one_process_state = torch.load(one_process / "checkpoints" / "last.ckpt", weights_only=True)
    one_process_state = one_process_state["state_dict"]
    assert {k: v.shape for k, v in checkpoint["state_dict"].items()} == {
        k: v.shape for k, v in one_process_state.items()
    }

    resumed, jobs_again = sweep(tmp_path, *fsdp)  # the same command: the same job directory
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert jobs_again == jobs
    for result in (crashed, resumed):
        assert (result.stdout + result.stderr).count("Launching") == 1  # each sweep ran once
    assert "from step 4 of" in resumed.stdout
    record = read(job / "run.json")
    assert record["status"] == "completed" and record["attempts"] == 2  # rank 0's record only
    assert record["model"]["activation_checkpointing"] is True
    assert record["tokens_per_step"] == reference["tokens_per_step"] == 2 * 4 * 32
    ranks = [read(job / f"probe-{rank}.json") for rank in (0, 1)]
    assert {r["WORLD_SIZE"] for r in ranks} == {"2"} and ranks[0]["pid"] != ranks[1]["pid"]

    # The same curve as one process: each step the same 8 windows, the gradient averaged over the
    # ranks' halves and clipped by its global norm, the same AdamW update on each shard. Only the
    # order of fp32 sums differs: measured, validation losses agree to 5e-7 and weights to 4e-7.
    # The bounds (1e-5) are far from what a fault moves: unsharded replicas that never average
    # their gradients are 2.7e-2 off at step 2, and clipping or not 1.2e-3 at step 6. (train/loss
    # is rank 0's half batch, as with DDP, so it is not compared.)
    (_, a), (_, b) = MetricsCSV(one_process).read(), MetricsCSV(job).read()
    assert [r["step"] for r in a] == [r["step"] for r in b] == [str(s) for s in range(1, 7)]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    assert [r["step"] for r in b if r["val/loss"]] == ["2", "4", "6"]  # before and after the crash
    for ra, rb in zip(a, b, strict=True):
        if rb["val/loss"]:
            assert float(rb["val/loss"]) == pytest.approx(float(ra["val/loss"]), abs=1e-5)
    assert record["val_loss"] == pytest.approx(reference["val_loss"], abs=1e-5)
    # The weights too: the resumed attempt restored AdamW's moments, the schedule and the data.
    final = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 6
    for name, weight in one_process_state.items():
        assert torch.allclose(final["state_dict"][name], weight, atol=1e-5), name
