"""How long the quick start's study takes, and where the time goes. Prints figures; asserts nothing.

    python benchmarks/demo_time.py [--out DIR] [--sweep demo] [OVERRIDE ...]

Runs `scaling-train -m sweep=demo` into a fresh output root (so nothing is skipped or resumed),
then `scaling-fit report` on it, as `make demo` does, and prints:
1. the wall time of the sweep, of the report and of both (what `make demo` costs after setup);
2. per job: width, parameters, steps, its training wall time (run.json) and the final loss;
3. per budget: the jobs' summed training time, and the time outside training (process start,
   imports, data, validation at the end), which the launcher pays once per job.
Extra overrides go to the sweep (e.g. `budget.flops=3e10,6e10,1.2e11` to try other budgets).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="output root (default: a fresh temporary directory)")
    parser.add_argument("--sweep", default="demo")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="demo-time-"))
    sweep_dir = root / "sweeps" / args.sweep

    train = [str(BIN / "scaling-train"), "-m", f"sweep={args.sweep}", f"sweep_id={args.sweep}"]
    train += [f"paths.output_root={root}", *args.overrides]
    sweep_s = timed(train)
    report = [str(BIN / "scaling-fit"), "report", str(sweep_dir), "--out"]
    report_s = timed([*report, str(sweep_dir / "report.md")])

    rows = json.loads((sweep_dir / "summary.json").read_text())
    print(f"sweep {sweep_s:.1f} s, report {report_s:.1f} s, total {sweep_s + report_s:.1f} s")
    print(f"{'job':40s} {'d_model':>7s} {'params':>7s} {'steps':>6s} {'train s':>8s} {'loss':>6s}")
    per_budget: dict[float, float] = defaultdict(float)
    for row in rows:
        record = json.loads((Path(row["path"]) / "run.json").read_text())
        budget = float(
            next(o for o in record["overrides"] if o.startswith("budget.flops=")).split("=")[1]
        )
        per_budget[budget] += record["wall_time_s"]
        print(
            f"{row['job'][:40]:40s} {record['model']['d_model']:7d} {record['n_params']:7d} "
            f"{record['steps']:6d} {record['wall_time_s']:8.1f} {record['val_loss']:6.3f}"
        )
    training = sum(per_budget.values())
    for budget, seconds in sorted(per_budget.items()):
        print(f"budget {budget:.3g} FLOPs: {seconds:.1f} s of training")
    print(
        f"training {training:.1f} job-seconds; outside training {2 * sweep_s - training:.1f} "
        f"job-seconds if two jobs ran at all times ({len(rows)} jobs)"
    )
    print(f"outputs: {sweep_dir}")


if __name__ == "__main__":
    main()
