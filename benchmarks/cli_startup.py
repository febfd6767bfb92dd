"""How long `scaling-train` and `scaling-fit` take to answer without working. Prints figures; asserts nothing.

    python benchmarks/cli_startup.py [--runs 5]

Median wall time over --runs runs (from a fresh temporary directory) of `scaling-train --help`,
`scaling-train --cfg job` and Hydra's bash completion query (what each TAB runs: `-sc query=bash`
with COMP_LINE set by the shell), and of a bare `python -c pass` for the interpreter's own share.
torch, Lightning and W&B load only when a job runs, so none of these pays for them (5.4 s before);
scipy, matplotlib and pandas only when a fit runs (`scaling-fit --help` took 1.4 to 2.3 s before).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALING_TRAIN = str(Path(sys.executable).with_name("scaling-train"))
SCALING_FIT = str(Path(sys.executable).with_name("scaling-fit"))
COMMANDS = {
    "python -c pass": ([sys.executable, "-c", "pass"], {}),
    "scaling-train --help": ([SCALING_TRAIN, "--help"], {}),
    "scaling-fit --help": ([SCALING_FIT, "--help"], {}),
    "scaling-fit isoflop --help": ([SCALING_FIT, "isoflop", "--help"], {}),
    "scaling-train --cfg job": ([SCALING_TRAIN, "--cfg", "job"], {}),
    "completion (TAB after model=)": (
        [SCALING_TRAIN, "-sc", "query=bash"],
        {"COMP_LINE": "scaling-train model=", "COMP_POINT": "20"},
    ),
}


def wall_time(command: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=cwd, env={**os.environ, **env}, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as cwd:
        for name, (command, env) in COMMANDS.items():
            times = [wall_time(command, env, cwd) for _ in range(args.runs)]
            print(
                f"{name:32s} median {statistics.median(times):.2f} s "
                f"(min {min(times):.2f}, max {max(times):.2f}, {args.runs} runs)"
            )


if __name__ == "__main__":
    main()
