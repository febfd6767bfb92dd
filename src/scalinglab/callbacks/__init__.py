"""A run's lifecycle, as Lightning callbacks (listed in conf/callbacks/default.yaml), one module
per concern:

- `record`: `RunRecord` owns `run.json` (its fields: scalinglab.records.RUN_FIELDS);
- `metrics`: `StepMetrics`, a row per logged step (loss, tokens, FLOPs, lr, throughput, MFU) that
  ends a diverged run, and `MetricsCSV`, the logger that keeps those rows in `metrics.csv`;
- `checkpoints`: `Checkpoints` and `VerifiedCheckpointIO`, checkpoints written whole with a sha256
  and verified on load, and `check_checkpoint`, which holds one to its run's record;
- `wandb`: `WandbRun`, what makes a job's W&B run comparable with the others, and `LogLines`,
  plain progress lines for logs that are files.
"""

from scalinglab.callbacks.checkpoints import (
    Checkpoints,
    VerifiedCheckpointIO,
    check_checkpoint,
    checksum_path,
    damage,
    resume_point,
    save_verified,
    sha256_of,
)
from scalinglab.callbacks.metrics import PEAK_FLOPS, Diverged, MetricsCSV, StepMetrics, peak_flops
from scalinglab.callbacks.record import RunRecord, validated_last_step
from scalinglab.callbacks.wandb import LogLines, WandbRun, finish_wandb

__all__ = [
    "PEAK_FLOPS",
    "Checkpoints",
    "Diverged",
    "LogLines",
    "MetricsCSV",
    "RunRecord",
    "StepMetrics",
    "VerifiedCheckpointIO",
    "WandbRun",
    "check_checkpoint",
    "checksum_path",
    "damage",
    "finish_wandb",
    "peak_flops",
    "resume_point",
    "save_verified",
    "sha256_of",
    "validated_last_step",
]
