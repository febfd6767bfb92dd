"""`scaling-fit`'s command line: the option groups every fit shares, and one subcommand per law
(each law's registry.Command) plus `report`. Building it loads no fitting, plotting or table
library, so `--help` answers at once."""

from __future__ import annotations

import argparse

from scalinglab.analysis.budgets import BUDGET_RTOL
from scalinglab.analysis.columns import CURVE_LOSS
from scalinglab.analysis.registry import commands


def option_groups() -> tuple[argparse.ArgumentParser, ...]:
    """The shared option groups: inputs, scale columns, resampling, outputs."""
    # Option groups as parents: every fit takes all four; `transfer` (no scale columns, no
    # bootstrap) only the inputs and the outputs, so its help lists only what it reads.
    inputs = argparse.ArgumentParser(add_help=False)
    data = inputs.add_argument_group("data")
    data.add_argument("paths", nargs="*", help="run or sweep directories (searched at any depth)")
    data.add_argument("--csv", help="a table of points instead of run directories")
    data.add_argument("--loss-col", help="CSV column of the loss (default: loss)")
    data.add_argument(
        "--loss",
        choices=sorted(CURVE_LOSS),
        default="val_loss",
        help="which loss of a run to fit (default: val_loss, the final one)",
    )
    scale = argparse.ArgumentParser(add_help=False)
    columns = scale.add_argument_group("scale: parameters, tokens, compute")
    columns.add_argument("--n-col", help="CSV column of parameters N")
    columns.add_argument("--d-col", help="CSV column of training tokens D")
    columns.add_argument("--c-col", help="CSV column of compute C (FLOPs); default 6·N·D")
    columns.add_argument(
        "--budget-col",
        help="column holding each run's compute budget (FLOPs); default: the budget.flops "
        "override when every run has one, else runs whose FLOPs agree within --budget-tol "
        "share a budget",
    )
    columns.add_argument(
        "--budget-tol",
        type=float,
        default=BUDGET_RTOL,
        help=f"runs whose sorted FLOPs step by at most this fraction share a budget, in every "
        f"fit ({BUDGET_RTOL})",
    )
    columns.add_argument(
        "--mix-objectives",
        action="store_true",
        help="fit runs of different objectives (clm and mlm) in one law; refused otherwise",
    )
    columns.add_argument(
        "--mix-data",
        action="store_true",
        help="fit runs of different tokenizers, validation sets or sequence lengths in one law "
        "(their losses are other quantities); refused otherwise",
    )
    resampling = argparse.ArgumentParser(add_help=False)
    intervals = resampling.add_argument_group("intervals")
    intervals.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (200)")
    intervals.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the bootstrap resamples (0): same seed, same fit",
    )
    outputs = argparse.ArgumentParser(add_help=False)
    output = outputs.add_argument_group("output")
    output.add_argument(
        "--json", help="write the fit as JSON (report: the report.json document, here too)"
    )
    output.add_argument("--plot", help="write the figures (PNG and SVG) to this directory")
    output.add_argument(
        "--wandb", action="store_true", help="log fits and figures to a W&B run (job_type analysis)"
    )
    output.add_argument(
        "--wandb-project",
        default="scalinglab",
        help="W&B project of the --wandb run (scalinglab)",
    )
    output.add_argument(
        "--wandb-entity",
        help="W&B entity (user or team) of the --wandb run; default: your W&B default entity",
    )

    return inputs, scale, resampling, outputs


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """The parser: a subcommand per law that has one, in their order, then `report`."""
    inputs, scale, resampling, outputs = option_groups()
    parser = argparse.ArgumentParser(
        prog="scaling-fit",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str, fits: bool) -> argparse.ArgumentParser:
        parents = [inputs, scale, resampling, outputs] if fits else [inputs, outputs]
        return subcommands.add_parser(name, parents=parents, help=help, description=description)

    for spec, _ in commands():
        sub = command(spec.name, spec.help, spec.description, spec.fits)
        for argument in spec.arguments:
            sub.add_argument(*argument.flags, **argument.options)
    report = command(
        "report",
        "every fit the data supports, as one Markdown report",
        "Every fit the data supports (power laws in N and C, L(N, D), IsoFLOP, envelope, "
        "learning rate and batch size), each with its checks and figures, and why the others "
        "were skipped: --out report.md and report.json beside it, the figures in the same "
        "directory. Untrusted fits are marked and left out of the summary.",
        fits=True,
    )
    report.add_argument("--out", default="report.md", help="the report; figures go beside it")
    return parser
