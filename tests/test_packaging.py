"""scalinglab as a package: its configs ship inside it, users add their own without forking, the
command line answers before torch loads, and a wheel installed elsewhere runs a sweep."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "src", "analysis", "conf", "sweeps")  # what a wheel holds
FRAMEWORKS = ("torch", "pytorch_lightning", "lightning_fabric", "wandb", "pandas")

# A user's own configs, outside the repository: a model option and a sweep file.
USER_MODEL = """\
defaults:
  - gpt
d_model: 96
n_layers: 1
n_heads: 2
"""
# The tiny training of tests/conftest.py's TINY: seconds a job on a CPU.
USER_SWEEP = """\
# @package _global_
defaults:
  - override /data: synthetic
name: mine
data:
  batch_size: 4
  seq_len: 32
  n_train_tokens: 65536
  val_tokens: 2048
trainer:
  max_steps: 6
  val_check_interval: 3
  log_every_n_steps: 1
scheduler:
  warmup_steps: 2
hydra:
  sweeper:
    params:
      seed: 0,1
"""


def user_configs(directory: Path) -> Path:
    (directory / "model").mkdir(parents=True)
    (directory / "sweep").mkdir()
    (directory / "model" / "my_model.yaml").write_text(USER_MODEL)
    (directory / "sweep" / "mine.yaml").write_text(USER_SWEEP)
    return directory


def cli(*args: str, cwd: Path, program: str = "scaling-train") -> subprocess.CompletedProcess:
    """The installed command, as a user runs it (from cwd)."""
    executable = Path(sys.executable).with_name(program) if "/" not in program else Path(program)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [str(executable), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_importing_the_entry_point_loads_no_framework() -> None:
    """torch, Lightning, W&B and pandas load when a job runs: `--help`, `--cfg` and TAB
    completion pay only for Hydra (benchmarks/cli_startup.py measures them)."""
    code = f"import sys, scalinglab.train; print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_and_completion_answer_without_torch(tmp_path: Path) -> None:
    """The CLI itself, not only the import: `--help` and a completion query load no framework."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['scaling-train', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('scalinglab.train', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print('LOADED', [m for m in {FRAMEWORKS!r} if m in sys.modules])\n"
    )
    env = {**os.environ, "COMP_LINE": "scaling-train model=gpt_"}  # what bash's TAB sends
    for args in (["--help"], ["--cfg", "job"], ["-sc", "query=bash"]):
        result = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
        )
        assert "LOADED []" in result.stdout, (args, result.stdout[-500:], result.stderr[-2000:])


def test_configs_come_from_the_package_in_any_directory(tmp_path: Path) -> None:
    result = cli("sweep=demo", "--cfg", "job", cwd=tmp_path)  # an empty directory
    assert result.returncode == 0, result.stderr[-2000:]
    assert "name: demo" in result.stdout


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_users_add_configs_and_sweeps_without_forking(how: str, tmp_path: Path) -> None:
    mine = user_configs(tmp_path / "my_configs")
    where = (
        ["--config-dir", str(mine)]
        if how == "--config-dir"
        else [f"hydra.searchpath=[file://{mine}]"]
    )
    model = cli(*where, "model=my_model", "--cfg", "job", "--resolve", cwd=tmp_path)
    assert model.returncode == 0, model.stderr[-2000:]
    assert "d_model: 96" in model.stdout
    sweep = cli(*where, "sweep=mine", "model=my_model", "--cfg", "job", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert "name: mine" in sweep.stdout and "seq_len: 32" in sweep.stdout
    # And the shipped ones are still there beside them.
    assert cli(*where, "sweep=demo", "--cfg", "job", cwd=tmp_path).returncode == 0


def test_quick_help_lists_what_hydras_own_help_lists(tmp_path: Path) -> None:
    """`--help` shares one config repository across Hydra's group queries (for speed): it must
    list the same groups and options, a user's own included, as Hydra's unpatched help."""
    mine = user_configs(tmp_path / "my_configs")
    quick = cli("--config-dir", str(mine), "--help", cwd=tmp_path)
    unpatched = subprocess.run(
        [sys.executable, "-c", "import sys, scalinglab.train as t\n"
         "sys.argv = ['scaling-train', *sys.argv[1:]]\nt.main()",
         "--config-dir", str(mine), "--help"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert quick.returncode == unpatched.returncode == 0, quick.stderr[-2000:]
    assert quick.stdout == unpatched.stdout
    assert "my_model" in next(
        line for line in quick.stdout.splitlines() if line.startswith("model:")
    )


def fresh_venv(directory: Path) -> Path:
    """A virtual environment that sees this one's dependencies (torch and the rest, installed
    here) but not its editable scalinglab: a .pth line adds this site-packages after its own, and
    the editable install's finder (registered by a .pth file there) is not run from it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    python = directory / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_runs_a_sweep_from_an_empty_directory(tmp_path: Path) -> None:
    """About 30 s: build the wheel, install it alone into a fresh environment, and run a sweep of
    the user's own from a directory holding nothing but that sweep's config directory."""
    # From a copy of the sources: an in-tree build reuses whatever an earlier one left in build/.
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():  # conf/sweep stays a link to sweeps/, as in the repository
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=skip)
        else:
            shutil.copy(ROOT / name, source)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("scalinglab-*.whl")
    python = fresh_venv(tmp_path / "venv")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]

    where = subprocess.run(
        [str(python), "-c", "import scalinglab.train as t; print(t.__file__); print(t.CONFIG_DIR)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr[-3000:]
    package_file, config_dir = where.stdout.split()
    assert package_file.startswith(str(tmp_path / "venv")), where.stdout + where.stderr
    assert config_dir.startswith(str(tmp_path / "venv")) and Path(config_dir, "sweep").is_dir()
    corpora = Path(package_file).parent / "data" / "corpora"  # data=python_stdlib, with its licence
    assert {p.name for p in corpora.iterdir()} >= {
        "cpython-3.11.7-lib.tar.gz",
        "LICENSE-cpython.txt",
    }

    work = tmp_path / "empty"
    mine = user_configs(work / "my_configs")
    scaling_train = str(python.with_name("scaling-train"))
    result = cli(
        "-m", f"hydra.searchpath=[file://{mine}]", "sweep=mine", "model=my_model",
        cwd=work, program=scaling_train,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (sweep_dir,) = (work / "outputs" / "sweeps").iterdir()
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [row["status"] for row in summary] == ["completed", "completed"]
    records = [json.loads(Path(row["path"], "run.json").read_text()) for row in summary]
    assert [(r["seed"], r["steps"], r["model"]["d_model"]) for r in records] == [
        (0, 6, 96),
        (1, 6, 96),
    ]
