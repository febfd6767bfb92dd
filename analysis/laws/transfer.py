"""Learning-rate transfer across widths (muP): the optimal learning rate per (parametrization,
width), and whether each parametrization's optimum holds across widths within one grid step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.inputs import aligned, fraction, positive_1d, same_length
from scalinglab.analysis.laws.hparams import near_optimal_bands
from scalinglab.analysis.registry import Argument, Command, Law
from scalinglab.analysis.result import FitResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# A parametrization's widths must span at least this factor for its transfer to be tested.
MIN_TRANSFER_SPAN = 4.0


def grid_step(lr: np.ndarray) -> float:
    """The learning-rate grid's step, a factor: the median ratio of neighbouring distinct lrs."""
    distinct = np.unique(lr)
    return float(np.exp(np.median(np.diff(np.log(distinct))))) if distinct.size > 1 else np.nan


def _transfer(cells: list[dict], parametrization: np.ndarray, lr: np.ndarray) -> tuple:
    """Per parametrization, whether its optimum holds across widths ({widths, lr_opt, grid_step,
    spread_steps, holds}), and the design problems found (widths spanning too little)."""
    transfer, problems = {}, []
    for name in dict.fromkeys(c["parametrization"] for c in cells):
        mine = [c for c in cells if c["parametrization"] == name]
        optima = np.array([c["lr_opt"] for c in mine])
        step = grid_step(lr[parametrization == name])
        spread = float(np.log(optima.max() / optima.min()) / np.log(step)) if step > 1 else np.nan
        widths = [c["width"] for c in mine]
        transfer[name] = {
            "widths": widths,
            "lr_opt": optima.tolist(),
            "grid_step": step,
            "spread_steps": spread,
            "holds": bool(spread <= 1.0 + 1e-9),
        }
        if len(widths) < 2 or max(widths) / min(widths) < MIN_TRANSFER_SPAN:
            problems.append(f"{name}: widths {widths} span less than {MIN_TRANSFER_SPAN:g}x")
    return transfer, problems


def lr_transfer(
    parametrization: np.ndarray,
    width: np.ndarray,
    lr: np.ndarray,
    loss: np.ndarray,
    *,
    tolerance: float = 0.01,
) -> FitResult:
    """The optimal learning rate per (parametrization, width), and whether it holds across widths.

    parametrization: name per run (sp, mup, completep); width: d_model per run; lr: peak (base)
    learning rate; loss: final validation loss (nats/token). Per (parametrization, width) the
    optimum is the centre of the near-optimal band (as per budget in fit_hparams) and its
    interval IS THAT BAND: the lowest and highest learning rate whose loss is within `tolerance`
    of the best run's; not a bootstrap interval (ci95 stays empty). Per parametrization, the
    optimum holds when every width's lies within one grid step (grid_step) of every other's.
    params: lr_opt[<parametrization>, <width>]. extras["cells"]: per cell {parametrization,
    width, best_loss, best_lr, lr_opt, lr_band, n_band, in_range, lr, loss};
    extras["transfer"]: per parametrization {widths, lr_opt, grid_step, spread_steps, holds}.
    checks: design (every parametrization has 2 or more widths spanning MIN_TRANSFER_SPAN, and
    every cell MIN_GRID_VALUES learning rates), centering (every cell's best run inside its lr
    grid: on an edge the optimum, and so the verdict, is unknown).
    """
    aligned(parametrization=parametrization, width=width, lr=lr, loss=loss)
    parametrization = np.asarray(parametrization, dtype=str)
    width, lr = positive_1d("width", width), positive_1d("lr", lr)
    loss = positive_1d("loss", loss)
    n = same_length(parametrization=parametrization, width=width, lr=lr, loss=loss)
    fraction(tolerance)
    keys, labels = np.unique(
        np.rec.fromarrays([parametrization, width]), return_inverse=True
    )  # sorted by parametrization, then width
    labels = labels.ravel()
    bands = near_optimal_bands(lr, np.ones_like(lr), loss, labels, tolerance)
    cells = []
    for k, ((name, w), band) in enumerate(zip(keys.tolist(), bands, strict=True)):
        member = labels == k
        del band["batch_size_opt"], band["batch_size_band"]
        cells.append(
            {"parametrization": name, "width": float(w), **band}
            | {"lr": lr[member].tolist(), "loss": loss[member].tolist()}
        )
    transfer, problems = _transfer(cells, parametrization, lr)
    counts = [np.unique(c["lr"]).size for c in cells]
    if min(counts) < checks.MIN_GRID_VALUES:
        problems.append(
            f"{min(counts)} learning rates in some (parametrization, width); an optimum needs "
            f"at least {checks.MIN_GRID_VALUES}"
        )
    edge = [f"{c['parametrization']} width {c['width']:g}" for c in cells if not c["in_range"]]
    params = {f"lr_opt[{c['parametrization']}, {c['width']:g}]": c["lr_opt"] for c in cells}
    return FitResult(
        law="transfer",
        params=params,
        derived={},
        n_points=n,
        converged=True,
        message=f"{len(cells)} (parametrization, width) cells; interval: the near-optimal band",
        extras={"cells": cells, "transfer": transfer, "tolerance": tolerance},
        checks=[
            checks.check(
                "design",
                not problems,
                "; ".join(problems)
                or f"every parametrization's widths span at least {MIN_TRANSFER_SPAN:g}x, with "
                f"at least {checks.MIN_GRID_VALUES} learning rates at each",
                list(params),
            ),
            checks.check(
                "centering",
                not edge,
                f"best run on the edge of the lr grid at {', '.join(edge)}: the optimum may lie "
                "beyond it; extend the grid"
                if edge
                else "every width's best run lies inside its sampled learning rates",
                [f"lr_opt[{e.replace(' width ', ', ')}]" for e in edge],
            ),
        ],
    )


def transfer_verdict(fit: FitResult) -> list[str]:
    """One line per parametrization: whether its optimal learning rate holds across widths."""
    lines = []
    for name, t in fit.extras["transfer"].items():
        optima = ", ".join(f"{w:g}: {v:.3g}" for w, v in zip(t["widths"], t["lr_opt"], strict=True))
        verdict = "holds" if t["holds"] else "DRIFTS"
        lines.append(
            f"{name}: optimum {verdict} across widths ({t['spread_steps']:.2g} grid steps of "
            f"x{t['grid_step']:.3g} apart, rule: at most 1); lr_opt by width {optima}"
        )
    return lines


def plot_transfer(fit: FitResult) -> Figure:
    """Learning-rate transfer (an lr_transfer fit): final loss against learning rate, one line per
    width, one panel per parametrization; each width's lr_opt (marker) with its near-optimal band
    (bar) drawn at its best loss. A panel title says whether the optimum holds across widths."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from scalinglab.analysis.plotting import AXIS_LABELS

    cells = fit.extras["cells"]
    names = list(fit.extras["transfer"])
    fig = Figure(figsize=(4.6 * len(names) + 1.2, 4.2), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False, sharey=True)[0]
    widths = sorted({c["width"] for c in cells})
    colours = dict(zip(widths, colormaps["viridis"](np.linspace(0, 0.9, len(widths))), strict=True))
    for ax, name in zip(axes, names, strict=True):
        for cell in sorted(
            (c for c in cells if c["parametrization"] == name), key=lambda c: c["width"]
        ):
            colour = colours[cell["width"]]
            lr, loss = np.asarray(cell["lr"]), np.asarray(cell["loss"])
            order = np.argsort(lr)
            ax.plot(lr[order], loss[order], "o-", color=colour, ms=3, lw=1)
            low, high = cell["lr_band"]
            bar = [[cell["lr_opt"] - low], [high - cell["lr_opt"]]]
            ax.errorbar(
                cell["lr_opt"], cell["best_loss"], xerr=bar, fmt="v", color=colour, ms=8,
                label=f"d_model {cell['width']:g}",
            )  # fmt: skip
        verdict = fit.extras["transfer"][name]
        holds = "holds" if verdict["holds"] else "drifts"
        ax.set_title(
            f"{name}: optimum {holds} ({verdict['spread_steps']:.2g} grid steps)",
            color="k" if verdict["holds"] else "C3",
        )
        ax.set(xscale="log", xlabel=AXIS_LABELS["lr"])
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("final " + AXIS_LABELS["loss"])
    axes[0].legend(title="width: lr_opt and band", fontsize="small")
    # Diverged runs would squash the bowls near the optimum: show up to 40% above the best loss.
    best = min(c["best_loss"] for c in cells)
    top = max(max(c["loss"]) for c in cells)
    axes[0].set_ylim(best - 0.03 * best, min(top, 1.4 * best) + 0.03 * best)
    return fig


# Columns of the run frame that `transfer` reads (a CSV may name its own).
TRANSFER_COLUMNS = {
    "parametrization": "model.parametrization",
    "width": "model.d_model",
    "lr": "optimizer.lr",
}


def load_transfer(args: Any) -> Any:
    """The runs (or CSV rows) of a learning-rate x width sweep as `transfer` reads them:
    parametrization (absent or blank: sp), width, lr and loss columns."""
    import pandas as pd

    from scalinglab.analysis.load import completed, load_runs
    from scalinglab.analysis.study import Study, positive_columns, table_or_runs

    paths = list(args.paths)
    csv = table_or_runs(args)
    if csv:
        points = pd.read_csv(csv)
        points.insert(0, "run_id", [str(i) for i in range(len(points))])
        loss, source = args.loss_col or "loss", f"{len(points)} rows of {csv}"
    else:
        runs = load_runs(paths)
        points = completed(runs)
        loss = args.loss
        source = f"{len(runs)} runs under {', '.join(paths)}, {len(points)} completed"
    given = {
        "parametrization": args.parametrization_col or TRANSFER_COLUMNS["parametrization"],
        "width": args.width_col or TRANSFER_COLUMNS["width"],
        "lr": args.lr_col or TRANSFER_COLUMNS["lr"],
        "loss": loss,
    }
    missing = [c for k, c in given.items() if k != "parametrization" and c not in points]
    if missing:
        raise ValueError(
            f"transfer needs the columns {', '.join(missing)}, which the data does not have "
            "(name them: --width-col, --lr-col, --loss-col)"
        )
    frame = pd.DataFrame({"run_id": points["run_id"]})
    for key, column in given.items():
        frame[key] = points.get(column, np.nan)
    frame["parametrization"] = frame["parametrization"].astype(object).fillna("sp").astype(str)
    frame = frame.dropna(subset=["width", "lr", "loss"])
    names = {"width": given["width"], "lr": given["lr"], "loss": given["loss"]}
    positive_columns(frame, names)
    found = ", ".join(f"{n} {p}" for p, n in frame["parametrization"].value_counts().items())
    return Study(frame, [source, f"{len(frame)} with a loss: {found}"], args)


def analyse_transfer(study: Any) -> Any:
    """The optimal learning rate per (parametrization, width) with its near-optimal band, and
    whether each parametrization's optimum holds across widths within one grid step."""
    import pandas as pd

    from scalinglab.analysis.section import Section

    rows = study.points
    fit = lr_transfer(
        rows["parametrization"].to_numpy(),
        rows["width"],
        rows["lr"],
        rows["loss"],
        tolerance=study.args.tolerance,
    )
    table = pd.DataFrame(
        {
            "parametrization": c["parametrization"],
            "width": c["width"],
            "lr_opt": c["lr_opt"],
            "band_lo": c["lr_band"][0],
            "band_hi": c["lr_band"][1],
            "best_lr": c["best_lr"],
            "best_loss": c["best_loss"],
            "runs": len(c["lr"]),
        }
        for c in fit.extras["cells"]
    )
    band = f"within {fit.extras['tolerance']:.0%} of the best loss"
    return Section(
        description=f"Per (parametrization, width), lr_opt is the centre of the near-optimal band "
        f"(the learning rates {band}); the interval is that band, not a bootstrap. "
        + " ".join(transfer_verdict(fit)),
        fit=fit,
        figures={"transfer": plot_transfer(fit)},
        captions={
            "transfer": "Final loss against learning rate at each width, one panel per "
            f"parametrization; the marker and bar: each width's lr_opt and its band ({band})."
        },
        tables={"Optimal learning rate per width": table},
        # Its intervals are bands: the terminal shows them as the table, then the verdict.
        notes=[f"Optimal learning rate per width:\n{table.to_string(index=False)}"]
        + transfer_verdict(fit),
    )


class TransferLaw(Law):
    name = "transfer"
    command = Command(
        "transfer",
        "optimal lr per width and parametrization: does it transfer?",
        "From a learning-rate grid at several widths under each parametrization (sweep="
        "mup_transfer), the optimal learning rate per (parametrization, width): the centre of "
        "the near-optimal band, the learning rates within --tolerance of the best final loss, "
        "reported as its interval (not a bootstrap). Says whether each parametrization's optimum "
        "holds across widths within one grid step. paths: run or sweep directories, or "
        "one CSV file. Figure: transfer (loss vs lr per width, a panel per parametrization).",
        arguments=(
            Argument(
                ("--parametrization-col",),
                {
                    "help": "column of the parametrization (default: model.parametrization; "
                    "absent or blank means sp)"
                },
            ),
            Argument(("--width-col",), {"help": "column of the width (default: model.d_model)"}),
            Argument(
                ("--lr-col",),
                {"help": "column of the peak (base) learning rate (default: optimizer.lr)"},
            ),
            Argument(
                ("--tolerance",),
                {
                    "type": float,
                    "default": 0.01,
                    "help": "the near-optimal band: runs within this fraction of the best loss "
                    "(0.01)",
                },
            ),
        ),
        fits=False,
        order=60,
    )

    def load(self, args: Any) -> Any:
        return load_transfer(args)

    def analyse(self, study: Any, fitted: dict, **options: Any) -> Any:
        return analyse_transfer(study)


LAWS = [TransferLaw()]
