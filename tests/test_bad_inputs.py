"""Every bad input gets one line, before anything is written: the table of issue 15.

Training rows compose the config as `scaling-train` does and call `train(cfg)`: each must raise a
ConfigError (Hydra prints it as its message alone, exit code 1) whose one line matches, and leave
no run.json. Hydra's own rows (an unknown option, a key without `+`) fail in composition. Sweep
rows run the sweeper's pre-launch check in-process. Analysis rows call `scaling-fit`'s main: exit
code 2 and one line on stderr; API rows call the analysis package, a ValueError each. A few rows
run the command itself, for what only shows there (a sweep file's mistakes among them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf

from scalinglab.analysis import load_runs
from scalinglab.analysis.cli import main as scaling_fit
from scalinglab.analysis.laws.chinchilla import fit_chinchilla
from scalinglab.analysis.laws.isoflop import fit_isoflop
from scalinglab.errors import ConfigError
from scalinglab.job import train_job
from scalinglab.planning import BranchStart, plan
from scalinglab.records import now_iso
from scalinglab.sweeping import stale_jobs, update_summary
from scalinglab.train import CONFIG_DIR, train
from tests.conftest import TINY_TRAINING, budgeted

SYNTHETIC = ["data=synthetic", "data.n_train_tokens=65536", "data.val_tokens=2048"]
NOT_ALLOWED = "is not allowed: a config builds only scalinglab's classes"

# (overrides on TINY_TRAINING, the synthetic data unless a row picks its own; message regex).
# {tmp} is the test's directory, where fixture files are written (see files()).
TRAINING = [
    # Tracebacks before: ZeroDivisionError (after a `failed` run.json), ValueError, TypeError,
    # MissingMandatoryValue.
    (["trainer.val_check_interval=0"], r"^trainer\.val_check_interval must be a positive integer, got 0$"),
    (["trainer.accumulate_grad_batches=0"], r"^trainer\.accumulate_grad_batches must be a positive integer, got 0$"),
    (["trainer.log_every_n_steps=0"], r"^trainer\.log_every_n_steps must be a positive integer, got 0$"),
    (["optimizer.weight_decay=-1"], r"^optimizer \(AdamW\): Invalid weight_decay value: -1"),
    (["+optimizer.lrr=1e-3"], r"^optimizer\.lrr is not a parameter of torch\.optim\.AdamW \(it takes amsgrad, betas, .*lr,"),
    (["data=text"], r"^data\.path must be set"),
    # Accepted silently before.
    (["optimizer.lr=inf"], r"^optimizer\.lr must be a positive number, got inf$"),
    (["divergence_threshold=-1"], r"^divergence_threshold must be a positive number, got -1$"),
    (["model.parametrization=mup", "optimizer.lr='${{inverse_width_lr:3e-3,64,${{model.d_model}}}}'"], r"^optimizer\.lr=\$\{inverse_width_lr:.*model\.parametrization=mup: the parametrization scales the hidden learning rates with width already"),
    (["model=gpt", "model.target_params=10"], r"^model\.target_params=10 is out of the size rule's reach: its nearest shape \(d_model=32, n_layers=2\) has 24,736 non-embedding parameters \(\+247260%\), beyond 10%"),
    # Both set the shape: width 32 was trained while the config and load_runs said 999.
    (["model=gpt", "model.target_params=2.5e4", "model.d_model=999"], r"^model\.target_params=25000 and model\.d_model=999 both set the shape \(the size rule gives d_model=32\): give one; target_params goes with model=gpt"),
    (["model=gpt_small", "model.target_params=1e6"], r"^model\.target_params=1e\+06 and model\.d_model=384 both set the shape \(the size rule gives d_model=160\)"),
    (["model=gpt", "model.target_params=1e6", "optimizer.lr='${{inverse_width_lr:3e-3,64,${{model.d_model}}}}'"], r"inverse_width_lr got model\.d_model=null \(the shape is left to the size rule\): pass \$\{model\} for the width the model is built with$"),
    (["model=gpt", "model.target_params=1e6", "model.d_ff=100"], r"^model\.target_params=1e\+06 and model\.d_ff=100 both set the shape \(the size rule gives d_ff=640\)"),
    (["scheduler.warmup_steps=100"], r"^scheduler\.warmup_steps=100 is not shorter than the run's 6 steps"),
    (["scheduler.warmup_steps=6"], r"^scheduler\.warmup_steps=6 is not shorter than the run's 6 steps"),
    (["+foo=1"], r"^foo is not a key of scalinglab's config \(nothing reads it\); its keys: budget, "),
    # Configs are not code: refused before anything runs, naming the key.
    (["optimizer._target_=subprocess.Popen"], rf"^optimizer\._target_=subprocess\.Popen {NOT_ALLOWED}"),
    (["+logger.x._target_=builtins.open", "+logger.x._args_=[{tmp}/keep.txt,w]"], rf"^logger\.x\._target_=builtins\.open {NOT_ALLOWED}"),
    (["+callbacks.x._target_=shutil.copyfile", "+callbacks.x._args_=[{tmp}/keep.txt,{tmp}/copy.txt]"], rf"^callbacks\.x\._target_=shutil\.copyfile {NOT_ALLOWED}"),
    (["+callbacks.x._target_=scalinglab.job.shutil.rmtree", "+callbacks.x._args_=[{tmp}/keep]"], rf"^callbacks\.x\._target_=scalinglab\.job\.shutil\.rmtree {NOT_ALLOWED}"),
    (["model._target_=builtins.exec"], rf"^model\._target_=builtins\.exec {NOT_ALLOWED}"),
    (["+trainer.plugins=[{{_target_:os.system,_args_:[true]}}]"], rf"^trainer\.plugins\[0\]\._target_=os\.system {NOT_ALLOWED}"),
    (["scheduler._target_=scalinglab.schedules.math.sqrt"], rf"^scheduler\._target_=scalinglab\.schedules\.math\.sqrt {NOT_ALLOWED}"),
    (["data._target_=scalinglab.data.NoSuchData"], r"^data\._target_=scalinglab\.data\.NoSuchData: no such class"),
    # Outputs stay under the output root.
    (["run_id=.."], r"^run_id='\.\.' must be a name"),
    (["paths.output_root=''"], r"^paths\.output_root is empty"),
    # Keys nothing reads.
    (["+budget.tokenz=1e6"], r"^budget\.tokenz is not a key of budget \(it has flops, min_steps, tokens, tokens_per_param\)$"),
    (["+data.n_tokens=1000"], r"^data\.n_tokens is not a parameter of scalinglab\.data\.SyntheticDataModule \(it takes batch_size, "),
    (["+trainer.max_step=10"], r"^trainer\.max_step is not a parameter of pytorch_lightning\.Trainer"),
    (["+model.layers=3"], r"^model\.layers is not a parameter of scalinglab\.model\.GPTConfig"),
    (["+scheduler.warmup=5"], r"^scheduler\.warmup is not a parameter of scalinglab\.schedules\.Cosine"),
    (["+logger.tensorboard=true"], r"^logger\.tensorboard must be a config with a _target_$"),
    # Values.
    (["optimizer.lr=nan"], r"^optimizer\.lr must be a positive number, got nan$"),
    (["optimizer.lr=0"], r"^optimizer\.lr must be a positive number, got 0$"),
    (["optimizer.betas=[0.9,1.5]"], r"^optimizer \(AdamW\): Invalid beta parameter at index 1: 1\.5$"),
    (["optimizer.lr=${{nope}}"], r"^optimizer\.lr: Interpolation key 'nope' not found$"),
    (["data.batch_size=-1"], r"^data\.batch_size must be a positive number, got -1$"),
    (["data.seq_len=0"], r"^data\.seq_len must be a positive number, got 0$"),
    (["model.max_seq_len=16"], r"^data\.seq_len=32 exceeds model\.max_seq_len=16$"),
    (["model.n_heads=3"], r"^model\.d_model=64 is not divisible by model\.n_heads=3$"),
    (["model.mlp=relu"], r"^model\.mlp must be 'gelu' or 'swiglu', got 'relu'$"),
    (["model.dropout=1.5"], r"^model\.dropout must be in \[0, 1\), got 1\.5$"),
    (["budget.tokens=1e5", "budget.flops=1e9"], r"^set at most one of budget\.tokens, budget\.flops$"),
    (["budget.flops=-1"], r"^budget\.flops must be a positive number, got -1"),
    (["budget.flops=1e3"], r"^budget\.flops=1000 gives 0 steps of 128 tokens .* below budget\.min_steps=1$"),
    (["trainer.max_steps=0"], r"^trainer\.max_steps must be a positive integer, got 0$"),
    (["seed=abc"], r"^seed must be an integer from 0 to 4294967295, got 'abc'$"),
    (["scheduler.min_lr_ratio=2"], r"^scheduler\.min_lr_ratio must be in \[0, 1\], got 2"),
    (["scheduler.warmup_steps=-1"], r"^scheduler\.warmup_steps must be >= 0, got -1$"),
    (["scheduler=wsd", "scheduler.decay_fraction=0"], r"^scheduler\.decay_fraction must be in \(0, 1\], got 0"),
    (["threads=0"], r"^threads must be a positive integer, got 0$"),
    (["trainer.devices=0"], r"^trainer\.devices must be positive, -1 \(all\) or auto, got 0$"),
    (["trainer.gradient_clip_val=-1"], r"^trainer\.gradient_clip_val must be >= 0 or null, got -1"),
    (["compile=maybe"], r"^compile must be true, false or null, got 'maybe'$"),
    (["ckpt_path={tmp}/none.ckpt"], r"^ckpt_path=.*/none\.ckpt: no such checkpoint$"),
    # A WSD branch's start is its plan's, not a config key: a user's is refused.
    (["+init_from={tmp}/keep.txt"], r"^init_from is not a key of scalinglab's config \(nothing reads it\)"),
    (["+init_step=3"], r"^init_step is not a key of scalinglab's config \(nothing reads it\)"),
    (["hparams=fitted"], r"^hparams_file must be set"),
    (["hparams=fitted", "hparams_file={tmp}/none.yaml"], r"^hparams_file=.*/none\.yaml: no such file"),
    (["hparams=deepseek_llm"], r"is a function of the compute budget: set budget\.flops"),
    (["wsd_branches=[1e5,2e5]"], r"^wsd_branches needs scheduler=wsd"),
    # Data.
    (["data=text", "data.path={tmp}/missing.txt"], r"data\.path.*missing\.txt"),
    (["data=text", "data.path={tmp}/empty"], r"data\.path.*empty"),
    (["data=shards", "data.path={tmp}/bad.bin", "data.vocab_size=256"], r"^shard .*/bad\.bin: magic number 7 is not 20240520$"),
    (["data.n_train_tokens=100"], r"training tokens are fewer than one batch"),
    (["data.vocab_size=1"], r"^data\.vocab_size=1 must lie in \[2, "),
    (["data.num_workers=-1"], r"^data\.num_workers=-1 must be >= 0$"),
    (["model.vocab_size=16"], r"^the data has 128 token ids, more than the 16 its config announces"),
    # Plain bad values (issue 31 §9). Tracebacks before: numpy's seed bounds, torch's shapes (and a
    # 13 PB allocation), an IndexError in AdamW, float('abc'), a TypeError inside Hydra's frame.
    (["seed=-1"], r"^seed must be an integer from 0 to 4294967295, got -1$"),
    (["seed=99999999999999999999"], r"^seed must be an integer from 0 to 4294967295, got 99999999999999999999$"),
    (["data.language_seed=-1"], r"^data\.language_seed must be an integer from 0 to 4294967295, got -1$"),
    (["model.d_model=32.0"], r"^model\.d_model must be an integer or null, got 32\.0$"),
    (["model.d_model=''"], r"^model\.d_model must be an integer or null, got ''$"),
    (["model.target_params=abc"], r"^model\.target_params must be a number or null, got 'abc'$"),
    (["model=gpt", "model.target_params=1e30"], r"^model\.target_params=1e\+30 is out of the size rule's reach: its nearest shape \(d_model=[\d,]+, n_layers=128\) has d_model/n_layers=1\.99e\+11, beyond twice the rule's 64"),
    (["optimizer.betas=[0.9]"], r"^optimizer\.betas must be \[a number, a number\], got \[0\.9\]$"),
    (["wsd_branches=[abc]"], r"^wsd_branches\[0\] must be a positive number, got 'abc'$"),
    (["data=text", "data.path=[a,b]"], r"^data\.path must be a string or null, got \['a', 'b'\]$"),
    # Misleading lines before: a run that trained, "damaged... its write never completed", "no
    # files match".
    (["paths.cache_dir={tmp}/keep.txt"], r"^paths\.cache_dir=.*/keep\.txt is a file: it must be a directory$"),
    (["ckpt_path={tmp}/keep.txt"], r"^ckpt_path=.*/keep\.txt is not a checkpoint \(not torch\.save's\)$"),
    (["data=text", "data.path=/dev/null"], r"^data\.path=/dev/null: not a file or a directory$"),
]  # fmt: skip

# Hydra's own refusals, as composition raises them (the command prints the same, no traceback).
COMPOSITION = [
    (["scheduler=nope"], r"Could not find 'scheduler/nope'"),
    (["model=gpt_huge"], r"Could not find 'model/gpt_huge'"),
    (["foo=1"], r"Could not override 'foo'"),
    (["optimizer.lrr=1e-3"], r"Could not override 'optimizer\.lrr'"),
    (["init_from=x.ckpt"], r"Could not override 'init_from'"),
]

# The sweeper's pre-launch check: (command-line overrides, a sweep file's text or None, message).
BROKEN_YAML = (
    "name: broken\nhydra:\n  sweeper:\n    params:\n      seed: [0, 1\n      model.d_model: 64\n"
)
SWEEPS = [
    (["sweep=mine"], f"# @package _global_\n{BROKEN_YAML}", r"^/.*/sweep/mine\.yaml:7:20: YAML syntax error: expected ',' or ']', but got ':'; while parsing a flow sequence from line 6$"),
    (["seed=range(0,0)"], None, r"^the sweep has no jobs: seed=range\(0,0\) gives no values$"),
    (["sweep=mine"], "# @package _global_\nhydra:\n  sweeper:\n    params:\n      seed: 'range(0,0)'\n", r"^the sweep has no jobs: seed=range\(0,0\) gives no values$"),
    (["sweep=mine"], "# @package _global_\noptimizer:\n  lrr: 1.0e-3\n", r"^1 of 1 jobs refused before launch: the job: optimizer\.lrr is not a parameter of torch\.optim\.AdamW"),
    (["sweep=mine"], "# @package _global_\nhydra:\n  sweeper:\n    params:\n      optimizer.lrr: 1e-3,3e-3\n", r"^2 of 2 jobs refused before launch:\n  optimizer\.lrr=0\.001: Could not override 'optimizer\.lrr'\..*\n  optimizer\.lrr=0\.003: Could not override"),
    (["sweep=mine"], "# @package _global_\nhydra:\n  sweeper:\n    params:\n      +foo: 1,2\n", r"^2 of 2 jobs refused before launch: 2 jobs \(\+foo=1, \+foo=2\): foo is not a key of scalinglab's config"),
    (["sweep=mine"], "# @package _global_\noptimizer:\n  _target_: subprocess.Popen\n", rf"^1 of 1 jobs refused before launch: the job: optimizer\._target_=subprocess\.Popen {NOT_ALLOWED}"),
    (["budget.flops=1e7,1e10", "budget.min_steps=50"], None, r"^1 of 2 jobs refused before launch: budget\.flops=10000000\.0: budget\.flops=1e\+07 gives 0 steps of 128 tokens"),
    # Jobs that share a reason share its line (it listed one line per job: 503 lines for 500).
    (["seed=range(0,5)", "optimizer.lr=-1"], None, r"^5 of 5 jobs refused before launch: 5 jobs \(seed=0, seed=1, seed=2 and 2 more\): optimizer\.lr must be a positive number, got -1$"),
    # Lightning would start rank 1 by running the whole sweep again (a rank failed, recorded completed).
    (["seed=0,1", "trainer.devices=2", "trainer.accelerator=cpu"], None, r"^2 of 2 jobs refused before launch: 2 jobs \(seed=0, seed=1\): a job of 2 processes in a sweep needs launcher=local_gpus, slurm or ray, which start its ranks \(hydra/launcher BasicLauncher cannot"),
]  # fmt: skip

# scaling-fit ARGS: exit code 2 and this one line after "scaling-fit: error: ".
ANALYSIS = [
    (["power", "{tmp}/list_run"], r"^no readable runs in .*/list_run: .*/list_run/run\.json: not a run record \(a JSON list\)$"),
    (["power", "{tmp}/nan_run"], r"^.*/nan_run/run\.json: a completed run whose val_loss is nan, not a positive number"),
    (["power", "--csv", "{tmp}/nan_loss.csv"], r"^.*/nan_loss\.csv: column 'loss' has no value \(blank or NaN\) on line 3$"),
    (["power", "--csv", "{tmp}/inf_loss.csv"], r"^.*/inf_loss\.csv: column 'loss' must hold positive, finite numbers; line 2 has inf$"),
    (["power", "--csv", "{tmp}/negative_flops.csv", "--x", "flops"], r"^.*/negative_flops\.csv: column 'flops' must hold positive, finite numbers; line 2 has -1(\.0)?$"),
    (["power", "--csv", "{tmp}/zero_flops.csv", "--c-col", "C", "--x", "flops"], r"^.*/zero_flops\.csv: column 'C' must hold positive, finite numbers; line 3 has 0(\.0)? \(and 1 more\)$"),
    (["power", "--csv", "{tmp}/empty.csv"], r"^.*/empty\.csv: an empty file \(no header, no rows\)$"),
    (["power", "--csv", "{tmp}/header_only.csv"], r"^.*/header_only\.csv: a header \(n_params, tokens, loss\) and no rows$"),
    (["power", "--csv", "{tmp}/no_loss.csv"], r"^.*/no_loss\.csv: no loss column"),
    (["power", "--csv", "{tmp}/no_size.csv"], r"^.*/no_size\.csv: needs an n_params or a flops column"),
    (["power", "--csv", "{tmp}/text_size.csv"], r"^.*/text_size\.csv: column 'n_params' must hold positive, finite numbers; line 2 has 'abc'$"),
    (["chinchilla", "--csv", "{tmp}/points.csv", "--n-col", "N"], r"^.*/points\.csv: no column 'N' \(for n_params\)"),
    (["power", "{tmp}/no_such_dir"], r"^.*/no_such_dir: no such file or directory$"),
    (["power", "{tmp}/empty"], r"^.*/empty: no runs found \(no run\.json below it\)$"),
    (["power", "--csv", "{tmp}/no_such.csv"], r"No such file or directory: '.*/no_such\.csv'$"),
    (["power"], r"^give run or sweep directories, or --csv FILE$"),
    # "no loss column", and a UTF-8 error without the file's name, before.
    (["power", "--csv", "{tmp}/semicolons.csv"], r"^.*/semicolons\.csv: one column, 'n_params;tokens;loss': its columns are separated by ';'; scaling-fit reads comma-separated tables$"),
    (["power", "--csv", "{tmp}/binary.csv"], r"^.*/binary\.csv: not a CSV table \('utf-8' codec can't decode byte 0x89"),
]  # fmt: skip

# The analysis package's Python API: (what, a call on the fixture directory, its ValueError).
N_D = np.meshgrid([1e6, 2e6, 4e6, 8e6], [1e8, 2e8, 4e8])
POINTS = (
    N_D[0].ravel(),
    N_D[1].ravel(),
    1.7 + 400 / N_D[0].ravel() ** 0.34 + 410 / N_D[1].ravel() ** 0.28,
)
API = [
    ("load_runs([])", lambda tmp: load_runs([]), r"^load_runs needs run or sweep directories \(or run\.json files\), got none$"),
    ("fit_isoflop([], [], [])", lambda tmp: fit_isoflop([], [], []), r"^C is empty: a fit needs points$"),
    ("n_starts=0", lambda tmp: fit_chinchilla(*POINTS, n_starts=0, n_bootstrap=0), r"^n_starts must be a count, 1 or more; got 0$"),
    ("a time without timezone", lambda tmp: load_runs(tmp / "naive_run"), r'/naive_run/run\.json: not a run record \(started_at is "2026-01-01T00:00:00", not an ISO time with a timezone\)$'),
]  # fmt: skip


def files(tmp: Path) -> Path:
    """The inputs the rows point at, under tmp."""
    (tmp / "keep.txt").write_text("keep")
    (tmp / "empty").mkdir()
    shard = np.zeros(256 + 1000, dtype="<i4")
    shard[0] = 7  # not the magic number
    shard.tofile(tmp / "bad.bin")
    (tmp / "list_run").mkdir()
    (tmp / "list_run" / "run.json").write_text("[1, 2]")
    (tmp / "nan_run").mkdir()
    (tmp / "nan_run" / "run.json").write_text('{"status": "completed", "val_loss": NaN}')
    tables = {
        "points": "N_,D,loss\n1e6,2e7,3.1\n2e6,4e7,2.9\n",
        "nan_loss": "n_params,tokens,loss\n1e6,2e7,3.1\n2e6,4e7,NaN\n",
        "inf_loss": "n_params,tokens,loss\n1e6,2e7,inf\n2e6,4e7,3.0\n",
        "negative_flops": "flops,loss\n-1,3.1\n1e18,2.9\n",
        "zero_flops": "C,loss\n1e17,3.1\n0,2.9\n0,2.8\n",
        "empty": "",
        "header_only": "n_params,tokens,loss\n",
        "no_loss": "n_params,tokens\n1e6,2e7\n",
        "no_size": "tokens,loss\n2e7,3.1\n",
        "text_size": "n_params,tokens,loss\nabc,2e7,3.1\n",
        "semicolons": "n_params;tokens;loss\n1e6;2e7;3.1\n2e6;4e7;2.9\n",
    }
    for name, text in tables.items():
        (tmp / f"{name}.csv").write_text(text)
    (tmp / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp / "naive_run").mkdir()
    naive = {"status": "completed", "val_loss": 3.0, "started_at": "2026-01-01T00:00:00"}
    (tmp / "naive_run" / "run.json").write_text(json.dumps(naive))
    return tmp


def one_line(message: str) -> str:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    return message.strip()


def run_records(root: Path) -> list[Path]:
    return sorted(root.rglob("run.json"))


def training_overrides(overrides: list[str], tmp: Path) -> list[str]:
    given = [o.format(tmp=tmp) for o in overrides]
    data = [] if any(o.startswith("data=") for o in given) else SYNTHETIC
    training = (
        budgeted(TINY_TRAINING) if any(o.startswith("budget.") for o in given) else TINY_TRAINING
    )
    return [*training, *data, *given, f"paths.output_dir={tmp / 'run'}", "sweep_id=test"]


def compose_job(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize(
    "overrides, message", TRAINING, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else ""
)
def test_training_input(overrides: list[str], message: str, tmp_path: Path) -> None:
    tmp = files(tmp_path)
    cfg = compose_job(training_overrides(overrides, tmp))
    with pytest.raises(ConfigError) as refused:
        train(cfg)
    assert re.search(message, one_line(str(refused.value))), str(refused.value)
    assert run_records(tmp / "run") == []
    # Nothing a refused config names ran: the file it would have truncated or copied is intact.
    assert (tmp / "keep.txt").read_text() == "keep" and not (tmp / "copy.txt").exists()


@pytest.mark.parametrize(
    "overrides, message", COMPOSITION, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_composition_input(overrides: list[str], message: str) -> None:
    with pytest.raises(HydraException) as refused:
        compose_job([*TINY_TRAINING, *overrides])
    assert re.search(message, str(refused.value).splitlines()[0]), str(refused.value)
    assert "Traceback" not in str(refused.value)


def check_sweep(overrides: list[str], searchpath: Path) -> None:
    """What `scaling-train -m OVERRIDES` checks before it writes or launches anything: the
    sweeper's expansion of the grid and its pre-launch plan of every job (Hydra's multirun, up to
    BasicSweeper.sweep's first write)."""
    # Imported once scalinglab.train has registered the plugins: Hydra's plugin scan re-executes
    # the module that defines BasicSweeper, and a subclass of the class it replaced breaks.
    from hydra_plugins.scalinglab.sweeper import PreflightSweeper

    overrides = [*overrides, f"hydra.searchpath=[file://{searchpath}]"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        config = loader.load_configuration("train", overrides, run_mode=RunMode.MULTIRUN)
        sweeper = PreflightSweeper(max_batch_size=None, params=config.hydra.sweeper.params)
        sweeper.config, sweeper.hydra_context = config, HydraContext(loader, callbacks=None)
        arguments = [*sweeper._parse_config(), *overrides]
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
        sweeper.split_arguments(parsed, sweeper.max_batch_size)


@pytest.mark.parametrize(
    "overrides, sweep_file, message",
    SWEEPS,
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_sweep_input(
    overrides: list[str], sweep_file: str | None, message: str, tmp_path: Path
) -> None:
    if sweep_file is not None:
        (tmp_path / "sweep").mkdir()
        (tmp_path / "sweep" / "mine.yaml").write_text(sweep_file)
    with pytest.raises(HydraException) as refused:
        training = (
            budgeted(TINY_TRAINING) if any("budget." in o for o in overrides) else TINY_TRAINING
        )
        check_sweep([*training, *SYNTHETIC, *overrides], tmp_path)
    assert re.search(message, str(refused.value)), str(refused.value)
    assert "Traceback" not in str(refused.value)


def test_a_long_sweep_check_says_how_far_it_is_and_stops_on_ctrl_c(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    import scalinglab.planning
    import scalinglab.sweeping

    monkeypatch.setattr(scalinglab.sweeping, "PROGRESS_FROM", 3)
    monkeypatch.setattr(scalinglab.sweeping, "PROGRESS_EVERY_S", 0.0)
    with caplog.at_level("INFO", logger="scalinglab"), pytest.raises(HydraException) as refused:
        check_sweep([*TINY_TRAINING, *SYNTHETIC, "seed=range(0,4)", "optimizer.lr=-1"], tmp_path)
    assert re.search(r"checked 4 of 4 jobs \(\d+/s\)", caplog.text), caplog.text
    assert str(refused.value).startswith("4 of 4 jobs refused before launch: 4 jobs (")

    planned, plan = [], scalinglab.planning.plan

    def interrupted(cfg):  # Ctrl-C during the third job's check
        planned.append(cfg.seed)
        if len(planned) == 3:
            raise KeyboardInterrupt
        return plan(cfg)

    monkeypatch.setattr(scalinglab.planning, "plan", interrupted)
    with pytest.raises(HydraException) as stopped:
        check_sweep([*TINY_TRAINING, *SYNTHETIC, "seed=range(0,6)"], tmp_path)
    assert str(stopped.value) == (
        "interrupted while checking the sweep's jobs (2 of 6 checked): nothing was launched"
    )


def test_a_large_sweep_is_checked_by_a_process_per_core_with_the_same_refusal(
    tmp_path: Path, monkeypatch
) -> None:
    """From PARALLEL_FROM jobs, forked workers check the grid: the same grouped refusal, in the
    jobs' order, as one process gives."""
    import scalinglab.sweeping

    grid = [*TINY_TRAINING, *SYNTHETIC, "seed=range(0,6)", "optimizer.lr=1e-3,-1"]
    refusals = []
    for parallel_from in (1000, 3):
        monkeypatch.setattr(scalinglab.sweeping, "PARALLEL_FROM", parallel_from)
        monkeypatch.setattr(scalinglab.sweeping, "CHUNK", 2)
        with pytest.raises(HydraException) as refused:
            check_sweep(grid, tmp_path)
        refusals.append(str(refused.value))
    assert refusals[0] == refusals[1]
    assert refusals[1] == (
        "6 of 12 jobs refused before launch: 6 jobs (seed=0 optimizer.lr=-1, seed=1 "
        "optimizer.lr=-1, seed=2 optimizer.lr=-1 and 3 more): optimizer.lr must be a positive "
        "number, got -1"
    )


@pytest.mark.parametrize(
    "argv, message", ANALYSIS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_analysis_input(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    tmp = files(tmp_path)
    assert scaling_fit([a.format(tmp=tmp) for a in argv] + ["--bootstrap", "0"]) == 2
    error = one_line(capsys.readouterr().err)
    assert error.startswith("scaling-fit: error: ")
    assert re.search(message, error.removeprefix("scaling-fit: error: ")), error


@pytest.mark.parametrize("what, call, message", API, ids=[row[0] for row in API])
def test_analysis_api_input(what: str, call, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as refused:
        call(files(tmp_path))
    assert re.search(message, one_line(str(refused.value))), str(refused.value)


def test_a_record_time_without_timezone_leaves_the_sweep_summary_whole(tmp_path: Path) -> None:
    """A run.json time with no timezone is not a record: the summary names the job damaged, and
    the sweep's closing lines (which compare times with the launch's) do not break on it."""
    job = tmp_path / "sweep" / "job"
    job.mkdir(parents=True)
    naive = {"status": "completed", "val_loss": 3.0, "ended_at": "2026-01-01T01:00:00"}
    (job / "run.json").write_text(json.dumps(naive))
    rows = update_summary(tmp_path / "sweep")
    assert stale_jobs(rows, "0" * 40, now_iso()) == []  # a TypeError before: naive vs aware
    assert rows[0]["status"] == "damaged" and "not an ISO time with a timezone" in rows[0]["error"]


# ---- the command itself: Hydra's printing and exit code, and nothing written ------------------
# A process each (~10 s on 2 shared cores): only what the in-process rows cannot show.

COMMAND = [
    (["-m", "sweep=mine"], f"# @package _global_\n{BROKEN_YAML}", r"^/.*/sweep/mine\.yaml:7:20: YAML syntax error"),
    (["-m", "seed=range(0,0)"], None, r"^the sweep has no jobs: seed=range\(0,0\) gives no values$"),
    # Before Hydra makes the directory its id names.
    (["sweep_id=../../x"], None, r"^sweep_id='\.\./\.\./x' must be a name \(letters, digits and \. _ = , \+ -\), not a path"),
    (["-m", "sweep_id=a/b", "seed=0,1"], None, r"^sweep_id='a/b' must be a name"),
    (["trainer.log_every_n_steps=0"], None, r"^trainer\.log_every_n_steps must be a positive integer, got 0$"),
    # Issue 31 §9: a 17-line traceback, and three lines around a TypeError, before.
    (["seed=-1"], None, r"^seed must be an integer from 0 to 4294967295, got -1$"),
    (["model.target_params=abc"], None, r"^model\.target_params must be a number or null, got 'abc'$"),
    # Sweep files: a 2,500-line RecursionError, a merge error, "sweep is not a key" before.
    (["-m", "sweep=mine"], "# @package _global_\ndefaults:\n  - /sweep/mine\n", r"^sweep/mine includes itself: defaults sweep/mine -> sweep/mine$"),
    (["-m", "sweep=mine"], "", r"^/.*/sweep/mine\.yaml: an empty file: a sweep= file starts with `# @package _global_`"),
    (["-m", "sweep=mine"], "# @package _global_\n- seed: 1\n", r"^/.*/sweep/mine\.yaml: a YAML list, not a config"),
    (["-m", "sweep=mine"], "hydra:\n  sweeper:\n    params:\n      seed: 0,1\n", r"^/.*/sweep/mine\.yaml: no `# @package _global_` line: a sweep= file sets keys of the whole config"),
]  # fmt: skip


@pytest.mark.parametrize(
    "args, sweep_file, message", COMMAND, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_command_line(
    args: list[str], sweep_file: str | None, message: str, tmp_path: Path
) -> None:
    if sweep_file is not None:
        (tmp_path / "sweep").mkdir()
        (tmp_path / "sweep" / "mine.yaml").write_text(sweep_file)
    flags = [a for a in args if a.startswith("-")]  # before the overrides, which win if last
    overrides = [a for a in args if a not in flags]
    result = subprocess.run(
        [sys.executable, "-m", "scalinglab.train", *flags, *TINY_TRAINING, *SYNTHETIC, *overrides,
         f"hydra.searchpath=[file://{tmp_path}]", f"paths.output_root={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    assert result.returncode == 1
    # Hydra frames a job's error with two lines of its own: which job, and how to see more.
    framing = (
        "Error executing job with overrides: ",
        "Set the environment variable HYDRA_FULL_ERROR",
    )
    lines = [
        line for line in result.stderr.splitlines() if line.strip() and not line.startswith(framing)
    ]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, lines[0]), lines[0]
    # Refused before anything was written: a sweep's directory or a run's records.
    assert not (tmp_path / "out" / "sweeps").exists() and run_records(tmp_path) == []


# ---- checkpoints are data, not code -------------------------------------------------------------


class Payload:
    """Writes a file when unpickled: what a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("where", ["init_from", "last.ckpt"])
def test_a_pickle_payload_in_a_checkpoint_is_not_executed(where: str, tmp_path: Path) -> None:
    """A hostile checkpoint, with a matching sha256 beside it (`sha256sum`'s format: a checksum
    proves the bytes are whole, not who wrote them), is never unpickled beyond tensors."""
    marker = tmp_path / "payload_ran"
    job = tmp_path / ("trunk" if where == "init_from" else "run")  # a WSD trunk, or the job's own
    checkpoint = job / "checkpoints" / ("hostile.ckpt" if where == "init_from" else "last.ckpt")
    checkpoint.parent.mkdir(parents=True)
    (job / "metrics.csv").write_text("step,tokens,flops,lr,train/loss,val/loss\n")
    torch.save({"global_step": 3, "state_dict": {}, "payload": Payload(marker)}, checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    checkpoint.with_name(f"{checkpoint.name}.sha256").write_text(f"{digest}  {checkpoint.name}\n")
    overrides = [
        *TINY_TRAINING,
        *SYNTHETIC,
        f"paths.output_dir={tmp_path / 'run'}",
        "sweep_id=test",
    ]
    cfg = compose_job(overrides)
    with contextlib.suppress(Exception):  # refusing the checkpoint is right; running it is not
        if where == "init_from":  # a WSD branch's start: its plan's, set by planning.plan
            job = dataclasses.replace(plan(cfg), start=BranchStart(checkpoint, 3))
            train_job(job)
        else:
            train(cfg)
    assert not marker.exists()


# ---- Hydra's own callbacks: built by Hydra before any job plans ---------------------------------


def test_hydra_callbacks_are_held_to_the_allow_list(tmp_path: Path) -> None:
    from hydra._internal.callbacks import Callbacks

    victim = tmp_path / "keep.txt"
    victim.write_text("keep")
    hostile = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    with pytest.raises(
        ConfigError, match=rf"^hydra\.callbacks\.x\._target_=builtins\.open {NOT_ALLOWED[:6]}"
    ):
        Callbacks(OmegaConf.create({"hydra": {"callbacks": {"x": hostile}}}))
    assert victim.read_text() == "keep"
    # A class under an allowed prefix that is not a Hydra callback is refused too.
    sneaky = {"_target_": "scalinglab.data.SyntheticDataModule"}
    with pytest.raises(ConfigError, match="is not allowed"):
        Callbacks(OmegaConf.create({"hydra": {"callbacks": {"y": sneaky}}}))
    # Hydra's own callbacks still build.
    own = {"_target_": "hydra.experimental.callbacks.LogJobReturnCallback"}
    assert len(Callbacks(OmegaConf.create({"hydra": {"callbacks": {"log": own}}})).callbacks) == 1


# ---- the environment: a config sets the libraries' settings, not what a subprocess runs ----------

GIT_HOOK = """# @package _global_
hydra:
  job:
    env_set:
      GIT_CONFIG_COUNT: 1
      GIT_CONFIG_KEY_0: core.fsmonitor
      GIT_CONFIG_VALUE_0: 'touch {marker}; false'
"""


def test_a_config_cannot_make_git_run_a_command(tmp_path: Path, monkeypatch) -> None:
    """The sweep file of issue 31 (GIT_CONFIG_* making `git status` run a command) is refused in
    one line before any job; and git_state, given such an environment anyway, runs nothing."""
    from scalinglab.records import git_state

    marker = tmp_path / "ran"
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "mine.yaml").write_text(GIT_HOOK.format(marker=marker))
    result = subprocess.run(
        [sys.executable, "-m", "scalinglab.train", "-m", "sweep=mine", *TINY_TRAINING, *SYNTHETIC,
         f"hydra.searchpath=[file://{tmp_path}]", f"paths.output_root={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "hydra.job.env_set.GIT_CONFIG_COUNT is not allowed" in result.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()

    for key, value in {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", f"touch {marker}; false")
    monkeypatch.setenv("PATH", str(tmp_path))  # and no git of the config's choosing
    commit, dirty = git_state()
    assert not marker.exists()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
