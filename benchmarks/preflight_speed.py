"""How fast a sweep's pre-launch check runs: jobs checked per second. Prints figures; asserts nothing.

    python benchmarks/preflight_speed.py [--jobs 1000] [--compare]

The check (scalinglab.sweeping.preflight) composes and plans every job of a sweep before anything
launches, as `scaling-train -m` does, here in-process on the demo's study (sweeps/demo.yaml) with
a grid over seeds and learning rates, and on the same grid where every fifth job also picks a
model config (a group choice, composed in full). `--compare` also times composing every job in
full, as Hydra's sweeper does (the check before it composed once per distinct group choice).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode

import scalinglab.train  # noqa: F401  (registers the plugins and resolvers)
from scalinglab.sweeping import JobConfigs, preflight


def grid(base: list[str], n_jobs: int, groups: bool) -> list[list[str]]:
    jobs = []
    for k in range(n_jobs):
        job = [*base, f"seed={k % 50}", f"optimizer.lr={1e-3 * (1 + k // 50):.4g}"]
        if groups and k % 5 == 0:
            job.append("model=gpt_nano")
        jobs.append(job)
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--compare", action="store_true", help="also compose each job in full")
    args = parser.parse_args()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path("pkg://scalinglab.conf"))
    with tempfile.TemporaryDirectory() as out:
        base = ["sweep=demo", "budget.flops=8e10", "size_step=0", f"paths.output_root={out}"]
        sweep = loader.load_configuration("train", overrides=base, run_mode=RunMode.MULTIRUN)
        preflight(sweep, loader, [base])  # imports and caches: once per process, not per grid
        for groups in (False, True):
            jobs = grid(base, args.jobs, groups)
            start = time.perf_counter()
            preflight(sweep, loader, jobs)
            seconds = time.perf_counter() - start
            what = "seeds x lrs" + (", every 5th job another model" if groups else "")
            print(f"{len(jobs)} jobs ({what}): {seconds:.1f} s, {len(jobs) / seconds:.0f} jobs/s")
        if args.compare:
            compose = JobConfigs(sweep, loader)
            start = time.perf_counter()
            for job in jobs[:100]:
                loader.load_sweep_config(sweep, job)
            per_job = (time.perf_counter() - start) / 100
            start = time.perf_counter()
            for job in jobs[:100]:
                compose(job)
            print(
                f"composing one job: {per_job * 1e3:.0f} ms in full (Hydra), "
                f"{(time.perf_counter() - start) * 10:.0f} ms from its group choices' composition"
            )


if __name__ == "__main__":
    main()
