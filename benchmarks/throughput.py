"""Training throughput: scalinglab's path against a minimal PyTorch loop, and the chunked loss.

    python benchmarks/throughput.py --device cuda --shapes paper                  # the main table
    python benchmarks/throughput.py --device cuda --shapes 7M --processes 1,2,4,8  # packing
    python benchmarks/throughput.py --device cuda --shapes 7M,124M \\
        --variants scalinglab-compiled --data memory,shards                        # data loading
    python benchmarks/throughput.py --device cpu --shapes tiny --threads 1        # CPU smoke check
    python benchmarks/throughput.py --shapes host --steps 500   # each loop's own host time per step

For each shape, in one process, on one device, with the same model, batch and optimizer settings:
- plain: scalinglab's GPT in a bare loop: bf16 autocast on CUDA, SDPA (the model's own), AdamW
  (fused on CUDA), gradient clipping at 1.0 (as the trainer config), `torch.compile` of the loss
  (on by default on CUDA), random batches already on the device.
- plain-loader: the plain loop fed as a job is: batches of scalinglab's data module from
  memory-mapped shards, pinned and copied to the device without blocking, as the DataLoader and
  Lightning do. Against plain it gives the data path's cost; against scalinglab, Lightning's.
- scalinglab: a sweep job. The root config is composed with Hydra (`trainer=gpu` on CUDA, so
  bf16-mixed, fused AdamW with its weight-decay groups, the cosine schedule, clipping, the run
  record's CSV logger, log lines and the checkpoint callback) with `compile=false`, and
  `scalinglab.train.train` runs it, with a timing callback added (`+callbacks.timer`); its one
  validation and checkpoint come after the timed steps. Its data are uint16 shards
  (`data=shards`: real ones with --shard-path, else a file of random tokens written here),
  memory-mapped as a job reads them (`--data shards`, the default) or read into RAM first
  (`--data memory`: the floor that data loading is compared to). `scalinglab-compiled` is the
  same with `compile=true` (what `compile: null` gives a one-GPU job), `scalinglab-chunked` with
  `compile=true` and `model.loss_chunk_size=--chunk-size` as well.
- chunked: the plain loop with `scalinglab.ops.chunked_cross_entropy` in place of the logit head
  and `F.cross_entropy`, so the (tokens, vocab) logits are never materialised; compiled whole,
  as `GPT.loss` would be with a chunked loss and `compile=true`.

Rates are measured over --steps steps after --warmup steps (compilation happens in warm-up).
"first step s" is the first step's wall time, compilation included: for scalinglab the run record's
`first_step_s`. Each measurement compiles cold in a fresh cache unless --compile-cache names one;
two runs with the same directory give the cold and then the warm figure, as a sweep's first and
later jobs of one shape pay it.
MFU = tokens/s x GPTConfig.flops_per_token(seq_len) / the device's peak from
scalinglab.callbacks.peak_flops (n/a on CPUs). Every measurement runs in a process of its own;
`--processes K` starts K copies of each at once on the same device (as `launcher=local_gpus
hydra.launcher.jobs_per_gpu=K` packs jobs), times them after a common barrier and reports their
summed tokens/s.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir

from scalinglab.callbacks import peak_flops
from scalinglab.data import ShardsDataModule, write_shard
from scalinglab.data.datamodule import TokenSequence, TrainBatches
from scalinglab.job import use_compile_cache
from scalinglab.model import GPT, GPTConfig
from scalinglab.ops import DEFAULT_CHUNK_SIZE, chunked_cross_entropy
from scalinglab.train import CONFIG_DIR, train

# name: (d_model, n_layers, n_heads, vocab_size, seq_len, batch_size). Batches fill an 80 GB GPU
# with the plain loop's materialised logits; every variant of a shape uses the same one.
SHAPES = {
    "7M": (128, 4, 4, 50304, 1024, 64),
    "30M": (384, 6, 6, 50304, 1024, 32),
    "124M": (768, 12, 12, 50304, 1024, 16),
    "355M": (1024, 24, 16, 50304, 1024, 8),
    "760M": (1536, 24, 24, 50304, 1024, 8),
    "cpu-d64": (64, 2, 2, 4096, 128, 8),
    "cpu-d128": (128, 2, 4, 4096, 128, 8),
    # Compute next to nothing: its step time is the per-step host time of the loop itself.
    "host": (16, 1, 1, 256, 16, 2),
}
GROUPS = {"paper": ["7M", "30M", "124M", "355M", "760M"], "tiny": ["cpu-d64", "cpu-d128"]}
VARIANTS = (
    "plain",
    "plain-loader",
    "scalinglab",
    "scalinglab-compiled",
    "scalinglab-chunked",
    "chunked",
)
DATA_MODES = ("shards", "memory")
LR, BETAS, WEIGHT_DECAY, CLIP = 3e-3, (0.9, 0.95), 0.1, 1.0  # conf/optimizer/adamw.yaml, trainer


@dataclass
class Result:
    shape: str
    variant: str
    data: str
    processes: int
    tokens_per_step: int
    step_ms: float
    tokens_per_sec: float
    mfu: float | None
    loss: float
    peak_gb: float | None = None  # torch.cuda.max_memory_allocated over the measurement
    first_step_s: float = math.nan  # compilation included: cold or warm, as --compile-cache is
    error: str = ""


def model_config(shape: str) -> GPTConfig:
    d, layers, heads, vocab, seq_len, _ = SHAPES[shape]
    return GPTConfig(
        vocab_size=vocab, max_seq_len=seq_len, d_model=d, n_layers=layers, n_heads=heads
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Barrier:
    """Processes started together wait here after warm-up, so they are timed while all run."""

    def __init__(self, directory: str | None, n: int):
        self.directory, self.n = directory, n

    def wait(self) -> None:
        if self.directory is None:
            return
        Path(self.directory, f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 900
        while len(list(Path(self.directory).glob("ready-*"))) < self.n:
            if time.monotonic() > deadline:
                raise TimeoutError("the other benchmark processes never became ready")
            time.sleep(0.01)


# ---- (a) and (c): the plain loop -----------------------------------------------------------------


def token_shard(shape: str, args: argparse.Namespace, directory: str) -> str:
    """--shard-path, else a shard of random tokens written to `directory`, enough for every step's
    batch to be new."""
    if args.shard_path:
        return args.shard_path
    _, _, _, vocab, seq_len, batch_size = SHAPES[shape]
    n_tokens = (args.warmup + args.steps + 2) * batch_size * (seq_len + 1)
    path = f"{directory}/tokens.bin"
    write_shard(path, np.random.default_rng(0).integers(0, vocab, n_tokens))
    return path


def time_plain(
    shape: str, args: argparse.Namespace, device: torch.device, variant: str, tmp: str
) -> tuple[float, float, float]:
    """(seconds per step, mean loss, first step's seconds) of the bare loop: plain, plain-loader
    or chunked."""
    use_compile_cache(Path(args.compile_cache or f"{tmp}/compile_cache"))  # as a job does
    cfg = model_config(shape)
    batch_size, seq_len = SHAPES[shape][5], cfg.max_seq_len
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, fused=cuda
    )
    loss_fn = model.loss
    if variant == "chunked":
        weight = model.head.weight  # tied: the embedding matrix
        model.head = nn.Identity()  # so the model returns the final hidden states

        def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            hidden = model(x).flatten(0, 1)
            return chunked_cross_entropy(hidden, weight, y.flatten(), args.chunk_size)

    # The whole loss, as LanguageModel compiles GPT.loss (the chunk loop traces as one graph).
    loss_fn = torch.compile(loss_fn) if args.compile else loss_fn
    gen = torch.Generator(device=device).manual_seed(0)
    batches = [
        torch.randint(0, cfg.vocab_size, (2, batch_size, seq_len), device=device, generator=gen)
        for _ in range(4)
    ]
    if variant == "plain-loader":  # as a job gets them: Lightning's copy of DataLoader batches
        data = ShardsDataModule(
            path=token_shard(shape, args, tmp), vocab_size=cfg.vocab_size, batch_size=batch_size,
            seq_len=seq_len, val_tokens=seq_len + 1,
        )  # fmt: skip
        data.setup("fit")
        stream = TrainBatches(data.train_split, batch_size, seq_len, seed=0)
    losses = torch.zeros((), device=device)

    def step(i: int) -> None:
        nonlocal losses
        if variant == "plain-loader":
            x, y = stream.batch(i)
            if cuda:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        else:
            x, y = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses += loss.detach()

    first_step = time.perf_counter()
    step(0)
    sync(device)
    first_step_s = time.perf_counter() - first_step
    for i in range(1, args.warmup):
        step(i)
    sync(device)
    Barrier(args.barrier, args.n_procs).wait()
    losses.zero_()
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    return seconds, losses.item() / args.steps, first_step_s


# ---- (b): scalinglab's path ---------------------------------------------------------------------


class InMemoryShards(ShardsDataModule):
    """The same shards read into RAM first: what memory-mapped shards are compared against."""

    name = "memory"

    def load_splits(self) -> tuple[TokenSequence, TokenSequence, dict]:
        train, val, info = super().load_splits()
        in_ram = [np.array(part) for part in train.parts]  # every part: train and val share them
        return (
            TokenSequence(in_ram, train.start, train.stop),
            TokenSequence(in_ram, val.start, val.stop),
            info,
        )


def report_syncs(message, category, filename, lineno, file=None, line=None) -> None:
    """A warnings.showwarning that prints where a host-device synchronisation happened."""
    if "synchroniz" not in str(message):
        return
    stack = "".join(traceback.format_stack(limit=14)[:-2])
    print(f"SYNC: {message}\n{stack}", file=sys.stderr, flush=True)


class StepTimer(pl.Callback):
    """Times the optimizer steps after `warmup`, and writes (seconds per step, mean loss) to `out`.

    Added to a job as a `+callbacks.timer` entry: its arguments are plain values of the config."""

    def __init__(
        self,
        warmup: int,
        out: str,
        barrier_dir: str | None = None,
        n_procs: int = 1,
        profile: str | None = None,
        sync_debug: bool = False,
    ):
        self.warmup, self.out, self.barrier = warmup, Path(out), Barrier(barrier_dir, n_procs)
        self.profile, self.sync_debug = profile, sync_debug
        self.start = math.nan
        self.losses: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: pl.Trainer, module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            sync(module.device)
            self.barrier.wait()
            self.start = time.perf_counter()
            if self.profile:  # Python frames too: where the host's time goes
                self.profiler = torch.profiler.profile(with_stack=True)
                self.profiler.start()
            if self.sync_debug:  # every synchronising call from here on, with its stack
                warnings.simplefilter("always")
                warnings.showwarning = report_syncs
                torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self.warmup:
            self.losses.append(outputs["loss"].detach())
        if trainer.global_step == trainer.max_steps:
            if self.sync_debug:
                torch.cuda.set_sync_debug_mode(0)
            sync(module.device)
            seconds = (time.perf_counter() - self.start) / (trainer.max_steps - self.warmup)
            loss = torch.stack(self.losses).mean().item()
            self.out.write_text(json.dumps({"seconds_per_step": seconds, "loss": loss}))
            if self.profile:
                self.report_profile(module.device)

    def report_profile(self, device: torch.device) -> None:
        self.profiler.stop()
        events = self.profiler.key_averages()
        for key, rows in (("self_cpu_time_total", 25), (f"self_{device.type}_time_total", 10)):
            table = events.table(sort_by=key, row_limit=rows, max_name_column_width=80)
            print(table, file=sys.stderr, flush=True)
        trace = Path(self.profile, f"trace-{os.getpid()}.json.gz")
        trace.parent.mkdir(parents=True, exist_ok=True)
        self.profiler.export_chrome_trace(str(trace))
        print(f"trace: {trace}", file=sys.stderr, flush=True)


def time_scalinglab(
    shape: str, args: argparse.Namespace, device: torch.device, variant: str, data: str, tmp: str
) -> tuple[float, float, float]:
    """(seconds per step, mean loss, first_step_s of its run record) of a sweep job:
    `scalinglab.train.train` on a composed config.

    Its data are uint16 shards (--shard-path, else a file of random tokens written here), memory-
    mapped (`shards`) or read into RAM first (`memory`). Validation and the checkpoint come after
    the last timed step.
    """
    d, layers, heads, vocab, seq_len, batch_size = SHAPES[shape]
    max_steps = args.warmup + args.steps
    shard_path = token_shard(shape, args, tmp)
    timing = Path(tmp, "timing.json")
    overrides = [
        "model=gpt",
        f"model.d_model={d}",
        f"model.n_layers={layers}",
        f"model.n_heads={heads}",
        f"model.vocab_size={vocab}",
        f"model.loss_chunk_size={args.chunk_size if 'chunked' in variant else 'null'}",
        f"compile={variant != 'scalinglab'}",
        "data=shards",
        f"data.path={shard_path}",
        f"data.vocab_size={vocab}",
        f"data.batch_size={batch_size}",
        f"data.seq_len={seq_len}",
        f"data.val_tokens={seq_len + 1}",
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"trainer.max_steps={max_steps}",
        f"trainer.val_check_interval={max_steps}",  # after the timed steps
        f"scheduler.warmup_steps={args.warmup}",  # shorter than the run, as a job's must be
        f"paths.output_dir={tmp}/job",
        f"paths.compile_cache_dir={args.compile_cache or f'{tmp}/compile_cache'}",
        "sweep_id=throughput",
        f"+callbacks.timer._target_={__name__}.StepTimer",
        f"+callbacks.timer.warmup={args.warmup}",
        f"+callbacks.timer.out={timing}",
        f"+callbacks.timer.barrier_dir={args.barrier or 'null'}",
        f"+callbacks.timer.n_procs={args.n_procs}",
        f"+callbacks.timer.profile={args.profile or 'null'}",
        f"+callbacks.timer.sync_debug={args.sync_debug}",
    ]
    if data == "memory":
        overrides.append(f"data._target_={__name__}.InMemoryShards")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    record = train(cfg)
    if record.get("status") != "completed":
        if record.get("status") == "oom":
            raise torch.OutOfMemoryError(record.get("error"))
        raise RuntimeError(f"the job ended {record.get('status')}: {record.get('error')}")
    result = json.loads(timing.read_text())
    return result["seconds_per_step"], result["loss"], record["first_step_s"]


# ---- measuring and reporting ----------------------------------------------------------------------


def measure(shape: str, variant: str, data: str, args: argparse.Namespace) -> Result:
    device = torch.device(args.device)
    cfg = model_config(shape)
    tokens_per_step = SHAPES[shape][5] * cfg.max_seq_len
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with tempfile.TemporaryDirectory(prefix="scalinglab-throughput-") as tmp:
            if variant.startswith("scalinglab"):
                seconds, loss, first_step_s = time_scalinglab(
                    shape, args, device, variant, data, tmp
                )
            else:
                seconds, loss, first_step_s = time_plain(shape, args, device, variant, tmp)
        peak_gb = torch.cuda.max_memory_allocated(device) / 1e9 if cuda else None
    except torch.OutOfMemoryError:
        nan = math.nan
        return Result(shape, variant, data, 1, tokens_per_step, nan, nan, None, nan, error="OOM")
    finally:
        gc.collect()
        torch._dynamo.reset()
        if cuda:
            torch.cuda.empty_cache()
    tokens_per_sec = tokens_per_step / seconds
    peak = peak_flops(device, args.peak_flops)
    mfu = tokens_per_sec * cfg.flops_per_token(cfg.max_seq_len) / peak if peak else None
    return Result(
        shape, variant, data, 1, tokens_per_step, 1e3 * seconds, tokens_per_sec, mfu, loss, peak_gb,
        first_step_s,
    )  # fmt: skip


def measure_in_processes(shape: str, variant: str, data: str, args, k: int) -> Result:
    """K copies of one measurement at once on the same device; their rates summed."""
    with tempfile.TemporaryDirectory(prefix="scalinglab-barrier-") as barrier_dir:
        command = [
            sys.executable, __file__, "--child", "--barrier", barrier_dir, "--n-procs", str(k),
            "--device", args.device, "--shapes", shape, "--variants", variant, "--data", data,
            "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--chunk-size", str(args.chunk_size), "--compile" if args.compile else "--no-compile",
        ]  # fmt: skip
        if args.shard_path:
            command += ["--shard-path", args.shard_path]
        if args.compile_cache:
            command += ["--compile-cache", args.compile_cache]
        if args.peak_flops:
            command += ["--peak-flops", str(args.peak_flops)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        command += ["--sync-debug"] * args.sync_debug
        if args.profile:
            command += ["--profile", args.profile]
        # A child's log goes to a file, not a terminal, as a sweep job's does (so no progress bar),
        # and is passed on once it ends.
        logs = [Path(barrier_dir, f"log-{i}") for i in range(k)]
        children = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
            for log in logs
        ]
        outputs = [child.communicate()[0] for child in children]
        for log in logs:
            sys.stderr.write(log.read_text())
    if any(child.returncode for child in children):
        error = f"{sum(bool(c.returncode) for c in children)} of {k} processes failed"
        return Result(shape, variant, data, k, 0, math.nan, math.nan, None, math.nan, error=error)
    results = [Result(**json.loads(out.strip().splitlines()[-1])) for out in outputs]
    if any(r.error for r in results):
        return Result(**{**asdict(results[0]), "processes": k, "error": results[0].error})
    mfus = [r.mfu for r in results]
    return Result(
        shape, variant, data, k, sum(r.tokens_per_step for r in results),
        float(np.mean([r.step_ms for r in results])), sum(r.tokens_per_sec for r in results),
        sum(mfus) if None not in mfus else None, float(np.mean([r.loss for r in results])),
        max(r.peak_gb for r in results) if results[0].peak_gb is not None else None,
        max(r.first_step_s for r in results),
    )  # fmt: skip


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{name}, torch {torch.__version__}, {args.warmup} warm-up + {args.steps} timed steps, "
          f"compile={args.compile}, chunk_size={args.chunk_size}")  # fmt: skip
    print("| shape | params | variant | data | procs | tokens/step | step ms | tokens/s | MFU "
          "| vs plain | step vs first data | mean loss | peak GB | first step s |")  # fmt: skip
    print("|---" * 5 + "|---:" * 9 + "|")
    # Ratios: tokens/s against the plain loop at the same shape and process count; step time
    # against the same variant with the first --data mode (the data-loading check).
    plain = {(r.shape, r.processes): r for r in results if r.variant == "plain"}
    first_data = {}
    for r in results:
        first_data.setdefault((r.shape, r.variant, r.processes), r)
    for r in results:
        params = f"{model_config(r.shape).n_params / 1e6:.1f}M"
        cells = [r.error or str(r.tokens_per_step), "", "", "", "", "", "", "", ""]
        if not r.error:
            base, data_base = (
                plain.get((r.shape, r.processes)),
                first_data[r.shape, r.variant, r.processes],
            )
            cells[1:] = [
                f"{r.step_ms:.1f}",
                f"{r.tokens_per_sec:,.0f}",
                "n/a" if r.mfu is None else f"{100 * r.mfu:.1f}%",
                f"{r.tokens_per_sec / base.tokens_per_sec:.2f}x" if base and not base.error else "",
                f"{r.step_ms / data_base.step_ms - 1:+.1%}" if data_base is not r else "",
                f"{r.loss:.4f}",
                "n/a" if r.peak_gb is None else f"{r.peak_gb:.1f}",
                f"{r.first_step_s:.2f}",
            ]
        print(f"| {r.shape} | {params} | {r.variant} | {r.data} | {r.processes} | "
              + " | ".join(cells) + " |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--shapes", default="paper", help=f"names or groups: {list(GROUPS)}, {list(SHAPES)}"
    )
    parser.add_argument("--variants", default="plain,scalinglab,chunked", help=f"of {VARIANTS}")
    parser.add_argument("--data", default="shards", help=f"scalinglab's data, of {DATA_MODES}")
    parser.add_argument("--processes", default="1", help="e.g. 1,2,4,8: that many at once")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile in the plain and chunked loops (default: on CUDA)")  # fmt: skip
    parser.add_argument("--shard-path", help="real shards for --data shards (default: a local one)")
    parser.add_argument("--compile-cache", metavar="DIR",
                        help="torch.compile's caches, shared by every measurement (default: a "
                             "fresh one each, so first steps compile cold); run twice for warm")  # fmt: skip
    parser.add_argument("--peak-flops", type=float, help="override the device's peak FLOP/s")
    parser.add_argument("--threads", type=int, help="CPU threads per process (default: cores / K)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--profile", metavar="DIR",
                        help="profile scalinglab's timed steps: top operators and Python frames "
                             "printed, a Chrome trace written to DIR")  # fmt: skip
    parser.add_argument("--sync-debug", action="store_true",
                        help="print every host-device synchronisation in scalinglab's timed steps")  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    parser.add_argument("--n-procs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    shapes = [s for name in args.shapes.split(",") for s in GROUPS.get(name, [name])]
    variants, data_modes = args.variants.split(","), args.data.split(",")
    for name, chosen, allowed in [("shape", shapes, SHAPES), ("variant", variants, VARIANTS),
                                  ("data", data_modes, (*DATA_MODES, "device"))]:  # fmt: skip
        if unknown := [c for c in chosen if c not in allowed]:
            parser.error(f"unknown {name} {unknown}; choose from {list(allowed)}")
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // args.n_procs))

    if args.child:  # one measurement, as one of --n-procs processes
        result = measure(shapes[0], variants[0], data_modes[0], args)
        print(json.dumps(asdict(result)))
        return
    pl.seed_everything(0, verbose=False)
    results = []
    for shape in shapes:
        for variant in variants:
            for data in data_modes if variant.startswith("scalinglab") else ["device"]:
                # Each measurement in fresh processes: a CUDA error in one (an illegal memory
                # access once ended a whole 7M table) loses that row only, and no compiled code
                # or allocator state carries over from the variant before.
                for k in map(int, args.processes.split(",")):
                    results.append(measure_in_processes(shape, variant, data, args, k))
                    print(json.dumps(asdict(results[-1])), file=sys.stderr, flush=True)
    print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
