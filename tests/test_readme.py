"""The README's commands: every `scaling-train` line composes as written (keys and options exist).

`make demo` (CI runs it) covers the quick start end to end; the tour's commands name GPUs, clusters
and datasets this machine lacks, so here each is composed with `--cfg job` instead of run (a sweep:
its first job).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import run_cli

README = Path(__file__).parents[1] / "README.md"


def readme_commands(program: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(f"{program} ")]


def write_readme_files(home: Path) -> list[Path]:
    """The README's YAML blocks whose first line names a file under ~ (`# ~/DIR/FILE.yaml`),
    written under home."""
    written = []
    for block in re.findall(r"```yaml\n# ~/(\S+)\n(.*?)```", README.read_text(), flags=re.S):
        path = home / block[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block[1])
        written.append(path)
    return written


def test_the_readme_shows_a_users_own_config(tmp_path: Path) -> None:
    assert [p.relative_to(tmp_path).parts[1:] for p in write_readme_files(tmp_path)] == [
        ("model", "my_model.yaml")
    ]
    commands = readme_commands("scaling-train")
    assert any("--config-dir ~/my_configs" in c for c in commands)
    assert any("hydra.searchpath=[file://$HOME/my_configs]" in c for c in commands)


def test_the_readme_shows_training_commands() -> None:
    assert len(readme_commands("scaling-train")) >= 8


@pytest.mark.parametrize("command", readme_commands("scaling-train"))
def test_readme_training_command_composes(command: str, tmp_path: Path) -> None:
    args = shlex.split(command)[1:]
    if "-m" in args:  # Hydra composes one job with --cfg: the first of each swept list
        args = [a.split(",")[0] for a in args if a != "-m"]
    if "--help" in args:
        args.remove("--help")
    if any(a.startswith("launcher=slurm") for a in args):
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra")
    if any(a.startswith("launcher=ray") for a in args):
        pytest.importorskip("ray", reason="needs the ray extra")
    if "--cfg" not in args:
        args += ["--cfg", "job"]
    write_readme_files(tmp_path)  # the user's own configs it shows, with ~ at tmp_path
    home = str(tmp_path)
    # As the shell expands them: ~ at a word's start only (not in `data.path=~/x`), $HOME anywhere.
    args = [(home + a[1:] if a.startswith("~") else a).replace("$HOME", home) for a in args]
    result = run_cli(*args, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model:" in result.stdout
