"""Optimal learning rate and batch size versus compute, from lr x batch-size grids per budget:
lr_opt = k_lr C^e_lr and batch_opt = k_bs C^e_bs. The optimum of a group of runs, the laws through
the optima and the rules file that training reads are shared with the (N, D) laws (hparams_nd).

Units: C in FLOPs, lr dimensionless (peak learning rate), batch_size in sequences or tokens
(extras["batch_unit"]; the fitted k_bs carries that unit), loss in nats per token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.bootstrap import percentile_interval
from scalinglab.analysis.budgets import BUDGET_RTOL, budget_flops, budget_labels
from scalinglab.analysis.fitting import Bootstrap, bootstrap, extrapolation
from scalinglab.analysis.frontier import loglog_fit
from scalinglab.analysis.inputs import aligned, fraction, positive_1d, same_length
from scalinglab.analysis.registry import Argument, Command, OptimumLaw, ReportEntry
from scalinglab.analysis.registry import get as get_law
from scalinglab.analysis.result import FitResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class HparamsExtras(TypedDict, total=False):
    budgets: list[dict[str, Any]]  # per budget: C, best_loss, lr_opt, batch_size_opt, bands, runs
    tolerance: float
    budget_tol: float
    batch_unit: str  # "tokens" (per step) or "sequences"
    bootstrap: dict[str, list[float]]
    flagged_budgets: list[float]
    n_bootstrap: int
    n_bootstrap_ok: int


def near_optimal_bands(lr, batch_size, loss, labels, tolerance) -> list[dict]:
    """Per group of runs (labels: 0, 1, ...; a budget, an (N, D) cell, a width): the runs within
    `tolerance` (a fraction) of the best loss, and the optimum as the geometric centre of that
    band, sqrt(min * max), in lr and in batch size. A band that is symmetric about the optimum in
    log space (a bowl in log lr, log batch) is centred on it. The caller adds each group's
    coordinates (C; N and D)."""
    rows = []
    for k in range(labels.max() + 1):
        member = labels == k
        lr_k, bs_k, loss_k = lr[member], batch_size[member], loss[member]
        best = np.argmin(loss_k)
        band = loss_k <= loss_k[best] * (1.0 + tolerance)
        lr_band = (lr_k[band].min(), lr_k[band].max())
        bs_band = (bs_k[band].min(), bs_k[band].max())
        # The optimum may lie beyond the grid when the best run sits on its edge.
        in_range = bool(lr_k.min() < lr_k[best] < lr_k.max()) and bool(
            bs_k.min() < bs_k[best] < bs_k.max() or np.unique(bs_k).size == 1
        )
        rows.append(
            {
                "best_loss": float(loss_k[best]),
                "best_lr": float(lr_k[best]),
                "lr_opt": float(np.sqrt(lr_band[0] * lr_band[1])),
                "batch_size_opt": float(np.sqrt(bs_band[0] * bs_band[1])),
                "lr_band": [float(v) for v in lr_band],
                "batch_size_band": [float(v) for v in bs_band],
                "n_band": int(band.sum()),
                "in_range": in_range,
            }
        )
    return rows


@dataclass(frozen=True)
class Grouping:
    """How a hyperparameter fit groups its runs and what its laws are laws of: `labels` (one group
    per run: a budget, an (N, D) cell), `coordinates(idx, labels)` (each group's row head from
    the runs `idx`: {C} or {N, D, C}) and `laws(rows)` (the law values through the optima)."""

    labels: np.ndarray
    coordinates: Callable[[np.ndarray, np.ndarray], list[dict[str, float]]]
    laws: Callable[[list[dict]], dict[str, float]]

    def rows(self, lr, batch_size, loss, tolerance, idx: np.ndarray | None = None) -> list[dict]:
        """Each group's near-optimal band led by its coordinates, over the runs `idx` (all)."""
        idx = np.arange(len(lr)) if idx is None else idx
        labels = self.labels[idx]
        bands = near_optimal_bands(lr[idx], batch_size[idx], loss[idx], labels, tolerance)
        heads = self.coordinates(idx, labels)
        return [head | band for head, band in zip(heads, bands, strict=True)]


def fit_optima(
    grouping: Grouping,
    lr: np.ndarray,
    batch_size: np.ndarray,
    loss: np.ndarray,
    *,
    tolerance: float,
    n_bootstrap: int,
    seed: int,
) -> tuple[list[dict], dict[str, float], Bootstrap]:
    """The one hyperparameter fit: every group's optimum (its rows, each with its runs' lr,
    batch_size and loss), the laws through them, and their bootstrap over runs within each
    group."""
    rows = grouping.rows(lr, batch_size, loss, tolerance)
    values = grouping.laws(rows)

    def fit_resample(idx: np.ndarray) -> dict[str, float]:
        return grouping.laws(grouping.rows(lr, batch_size, loss, tolerance, idx))

    boot = bootstrap(
        fit_resample, len(lr), n_bootstrap=n_bootstrap, seed=seed, strata=grouping.labels
    )
    for k, row in enumerate(rows):
        member = grouping.labels == k
        row.update(
            lr=lr[member].tolist(),
            batch_size=batch_size[member].tolist(),
            loss=loss[member].tolist(),
        )
    return rows, values, boot


def _compute_laws(rows) -> dict[str, float]:
    c = np.array([r["C"] for r in rows])
    k_lr, e_lr, _ = loglog_fit(c, np.array([r["lr_opt"] for r in rows]))
    k_bs, e_bs, _ = loglog_fit(c, np.array([r["batch_size_opt"] for r in rows]))
    return {"k_lr": k_lr, "e_lr": e_lr, "k_bs": k_bs, "e_bs": e_bs}


def edge_note(flagged: Sequence[str]) -> str:
    if not flagged:
        return ""
    return (
        "; best run on the edge of the lr or batch-size grid (optimum may lie beyond it) at "
        + ", ".join(flagged)
    )


def optima_checks(
    result: FitResult,
    rows: list[dict],
    labels: np.ndarray,
    lr: np.ndarray,
    batch_size: np.ndarray,
    *,
    design: list[dict],
    params: tuple[list[str], list[str]],
    exponents: list[str],
    predictions: dict,
    extrapolation: dict,
) -> list[dict]:
    """The checks of a law through per-group optima: its `design` checks, then 3 learning rates
    and 3 batch sizes in every group (params: the lr law's and the batch law's), each group's
    best run inside its grid, the intervals, and its `extrapolation` check."""
    return [
        *design,
        checks.grid_varies(lr, labels, "learning rate", params[0]),
        checks.grid_varies(batch_size, labels, "batch size", params[1]),
        checks.optimum_inside_grid(rows),
        checks.intervals(result, exponents=exponents, predictions=predictions),
        extrapolation,
    ]


def fit_hparams(
    C: np.ndarray,
    lr: np.ndarray,
    batch_size: np.ndarray,
    loss: np.ndarray,
    *,
    tolerance: float = 0.01,
    n_bootstrap: int = 200,
    seed: int = 0,
    budget_tol: float = BUDGET_RTOL,
    check_extrapolation: bool = True,
    batch_unit: str | None = None,
) -> FitResult:
    """Fit lr_opt = k_lr C^e_lr and batch_opt = k_bs C^e_bs from hyperparameter grids per budget.

    C: compute budget per run (FLOPs; runs whose FLOPs step by at most budget_tol share a budget,
    budgets.budget_labels); lr, batch_size, loss: per run. Per budget the near-optimal band is
    every run within `tolerance` (fraction) of the best loss; its geometric centre in lr and in
    batch size is the optimum. Budgets whose best run sits on the edge of the sampled lr or
    batch-size range are flagged (in_range False) but kept; the message lists them. Intervals:
    bootstrap over runs within each budget. batch_unit: "tokens" (per step) or "sequences", what
    batch_size counts (recorded in extras; a rules file needs tokens).
    params and derived: k_lr, e_lr, k_bs, e_bs. objective: sum of squared log10 residuals of the
    lr law. extras["budgets"]: per budget {C, best_loss, lr_opt, batch_size_opt, lr_band,
    batch_size_band, n_band, in_range, lr, batch_size, loss}.
    checks: design (at least 3 budgets; at least 3 learning rates and 3 batch sizes in every
    budget, else that law is not identified), centering (each budget's best run inside its grid),
    intervals (e_lr, e_bs exclude 0; lr_opt and batch_opt at the largest budget within a factor
    10), extrapolation (refit without the largest budget: its lr_opt within 50%;
    check_extrapolation=False skips it and the check fails as not run).
    """
    aligned(C=C, lr=lr, batch_size=batch_size, loss=loss)
    C, lr = positive_1d("C", C), positive_1d("lr", lr)
    batch_size, loss = positive_1d("batch_size", batch_size), positive_1d("loss", loss)
    n = same_length(C=C, lr=lr, batch_size=batch_size, loss=loss)
    fraction(tolerance)
    labels = budget_labels(C, budget_tol)
    if labels.max() + 1 < 2:
        raise ValueError(f"fit_hparams needs at least two compute budgets, got one (C={C[0]:.3g})")

    def coordinates(idx: np.ndarray, sub: np.ndarray) -> list[dict[str, float]]:
        return [{"C": float(c)} for c in budget_flops(C[idx], sub)]

    grouping = Grouping(labels, coordinates, _compute_laws)
    rows, values, boot = fit_optima(
        grouping, lr, batch_size, loss, tolerance=tolerance, n_bootstrap=n_bootstrap, seed=seed
    )
    c = np.array([r["C"] for r in rows])
    _, _, objective = loglog_fit(c, np.array([r["lr_opt"] for r in rows]))
    flagged = [r["C"] for r in rows if not r["in_range"]]
    extras: HparamsExtras = {
        "budgets": rows, "tolerance": tolerance, "budget_tol": budget_tol, **boot.extras(),
        "flagged_budgets": flagged,
    }  # fmt: skip
    if batch_unit is not None:
        extras["batch_unit"] = batch_unit
    edge = [f"C={[f'{v:.3g}' for v in flagged]}"] if flagged else []
    result = FitResult(
        law="hparams", params=dict(values), ci95=boot.ci95, derived=dict(values), n_points=n,
        converged=True, message=f"{len(rows)} budgets" + boot.note + edge_note(edge),
        objective=objective, extras=dict(extras),
    )  # fmt: skip
    design = checks.enough(
        len(rows), checks.MIN_HPARAM_BUDGETS, "compute budgets",
        "two parameters per law and a budget to spare", list(values),
    )  # fmt: skip
    held_out = extrapolation(
        result, fit_hparams, (C, lr, batch_size, loss), run=check_extrapolation, quantity="lr",
        statistic="max_abs_relative_error", threshold=checks.MAX_LR_ERROR,
        held_out="the largest budget", tolerance=tolerance, budget_tol=budget_tol,
    )  # fmt: skip
    result.checks = optima_checks(
        result, rows, labels, lr, batch_size, design=[design], params=(["k_lr", "e_lr"], ["k_bs", "e_bs"]),
        exponents=["e_lr", "e_bs"], predictions=_at_largest(values, boot, c.max()), extrapolation=held_out,
    )  # fmt: skip
    return result


def _at_largest(values: dict, boot: Bootstrap, c_max: float) -> dict:
    """lr_opt and batch_opt at the largest budget with their intervals, for checks.intervals."""
    c_max = float(c_max)
    draws = boot.draws
    predictions = {}
    for quantity, k, e in (("lr_opt", "k_lr", "e_lr"), ("batch_opt", "k_bs", "e_bs")):
        per_draw = np.asarray(draws.get(k, []), float) * c_max ** np.asarray(
            draws.get(e, []), float
        )
        lo, hi = percentile_interval(per_draw)
        value = values[k] * c_max ** values[e]
        predictions[f"{quantity} at C={c_max:.3g}"] = (value, lo, hi, [k, e])
    return predictions


# --------------------------------------------------------------------------------------------
# The rules file, the figure, and the section of a study


def hparam_rules(fit: FitResult, sources: list[str], *, untrusted_ok: bool = False) -> dict:
    """The laws of a `fit_hparams` or `fit_hparams_nd` fit as the rules file that training reads
    (conf/hparams/fitted.yaml): `form` (compute or nd), then lr and batch_tokens, each a
    coefficient with its exponent of C in FLOPs (compute) or its exponents of N in parameters and
    D in tokens (nd: exponent_n, exponent_d), with their 95% intervals, and the range fitted (C;
    nd: n_params and tokens). Needs the batch law in tokens per step (fit.extras["batch_unit"]
    == "tokens") and a trusted fit: training must not follow a law the data cannot identify,
    unless `untrusted_ok` says so knowingly; the file then records `trusted: false` and the
    failing checks."""
    reasons = "; ".join(f"{c['name']}: {c['detail']}" for c in fit.failed_checks)
    if not fit.trusted and not untrusted_ok:
        raise ValueError(
            f"the fitted laws are not trusted, so no rules file ({reasons}); "
            "--untrusted-ok writes it anyway, marked as such"
        )
    if fit.extras.get("batch_unit") != "tokens":
        raise ValueError(
            "a rules file needs the batch law in tokens per step: the runs do not record "
            "tokens_per_step (a CSV gives batch_size in sequences; --batch-col names a column in "
            "tokens per step)"
        )
    p, ci = fit.params, fit.ci95
    nan = (float("nan"), float("nan"))  # no interval when every bootstrap refit failed
    form = get_law(fit.law).rules_form(fit)

    def law(suffix: str) -> dict:
        names = {key: f"{prefix}_{suffix}" for key, prefix in form["terms"].items()}
        return {key: float(p[name]) for key, name in names.items()} | {
            "ci95": {key: [float(v) for v in ci.get(name, nan)] for key, name in names.items()}
        }

    return {
        **form["head"],
        "lr": law("lr"),
        "batch_tokens": law("bs"),
        "fitted_range": form["fitted_range"],
        "n_runs": int(fit.n_points),
        **form["flagged"],
        "sources": [str(s) for s in sources],
        "trusted": fit.trusted,
        **({} if fit.trusted else {"not_trusted_because": reasons}),
    }


def plot_hparams(fit: FitResult) -> Figure:
    """Learning rate x batch size maps, one panel per compute budget: each run coloured by its
    loss above the budget's best, the best run (star), the near-optimal band's centre (cross)
    and the fitted lr_opt(C), batch_opt(C) (plus)."""
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter

    from scalinglab.analysis.plotting import AXIS_LABELS, colour_scale

    budgets = fit.extras["budgets"]
    n_cols = min(3, len(budgets))
    n_rows = -(-len(budgets) // n_cols)
    fig = Figure(figsize=(4.2 * n_cols + 1, 3.6 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey=True).ravel()
    excess = [np.asarray(b["loss"]) - b["best_loss"] for b in budgets]
    norm = Normalize(0.0, max(float(np.max(e)) for e in excess))
    cmap = colour_scale(fig, axes.tolist(), norm, "loss above the budget's best (nats/token)")
    for ax, budget, budget_excess in zip(axes, budgets, excess, strict=False):
        ax.set(xscale="log", yscale="log", title=f"C = {budget['C']:.2g} FLOPs")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter("{x:g}")
            axis.set_minor_formatter(NullFormatter())
        ax.scatter(budget["lr"], budget["batch_size"], c=cmap(norm(budget_excess)), s=60)
        best = int(np.argmin(budget["loss"]))
        ax.plot(
            budget["lr"][best],
            budget["batch_size"][best],
            "*",
            color="C3",
            ms=14,
            mfc="none",
            label="best run",
        )
        ax.plot(
            budget["lr_opt"],
            budget["batch_size_opt"],
            "x",
            color="k",
            ms=10,
            label=f"band centre ({fit.extras.get('tolerance', 0):.0%} of best)",
        )
        predicted = fit.predict(budget["C"])
        ax.plot(
            predicted["lr"],
            predicted["batch_size"],
            "+",
            color="C1",
            ms=14,
            mew=2,
            label="fitted law",
        )
        if not budget["in_range"]:
            ax.set_title(ax.get_title() + " (best on grid edge)", color="C3")
    for ax in axes[len(budgets) :]:
        ax.set_visible(False)
    for ax in axes[(n_rows - 1) * n_cols :]:
        ax.set_xlabel(AXIS_LABELS["lr"])
    for ax in axes[::n_cols]:
        ax.set_ylabel(f"batch size ({fit.extras.get('batch_unit', 'sequences')} per step)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.suptitle(
        f"Learning rate x batch size: lr_opt ∝ C^{fit.params['e_lr']:.2f}, "
        f"batch_opt ∝ C^{fit.params['e_bs']:.2f}"
    )
    return fig


def hparam_points(study: Any, scale: list[str]) -> tuple[Any, str, str]:
    """The runs a hyperparameter fit reads (every column positive), the batch column and its
    unit: tokens per optimizer step where runs record it (it carries across sequence lengths and
    device counts, and the training rules take it); else sequences."""
    from scalinglab.analysis.study import positive_columns, rows

    points, args = study.points, study.args
    recorded = "tokens_per_step" in points and points["tokens_per_step"].notna().all()
    batch = "tokens_per_step" if recorded else "batch_size"
    runs = rows(study, [*scale, "lr", batch, "loss"], "the hyperparameter fit")
    names = {
        "budget": f"compute ({args.budget_col or args.c_col or 'flops'})",
        "n_params": f"N ({args.n_col or 'n_params'})",
        "tokens": f"D ({args.d_col or 'tokens'})",
        "lr": f"the learning rate ({getattr(args, 'lr_col', None) or 'lr'})",
        batch: f"the batch size ({getattr(args, 'batch_col', None) or batch})",
        "loss": f"the loss ({args.loss_col or args.loss})",
    }
    positive_columns(runs, {c: names[c] for c in (*scale, "lr", batch, "loss")})
    return runs, batch, "tokens" if batch == "tokens_per_step" else "sequences"


def rules_file(section: Any, args: Any) -> None:
    """--rules: the section's fitted laws as the rules file training reads, to be written."""
    import yaml

    if not getattr(args, "rules", None):
        return
    fit = section.fit
    document = hparam_rules(fit, sources=args.paths or [args.csv], untrusted_ok=args.untrusted_ok)
    header = get_law(fit.law).rules_form(fit)["header"]
    section.files[args.rules] = header + yaml.safe_dump(document, sort_keys=False)
    section.notes.append(
        f"wrote {args.rules}: use it with scaling-train hparams=fitted hparams_file=..."
    )


def hparams_section(fit: FitResult, description: str, figure: Any, caption: str, args: Any) -> Any:
    """A hyperparameter fit's section: its figure (named for its law) and caption, and the rules
    file when --rules asks for one."""
    from scalinglab.analysis.section import Section

    untrusted = "" if fit.trusted else " The fit is not trusted."
    section = Section(
        description=description,
        fit=fit,
        figures={fit.law: figure},
        captions={fit.law: caption + untrusted},
    )
    rules_file(section, args)
    return section


def analyse_hparams(study: Any) -> Any:
    """lr_opt and batch_opt as laws of compute C."""
    from scalinglab.analysis.study import budget_options

    runs, batch, unit = hparam_points(study, ["budget"])
    fit = fit_hparams(
        runs["budget"], runs["lr"], runs[batch], runs["loss"], batch_unit=unit,
        **budget_options(study),
    )  # fmt: skip
    return hparams_section(
        fit,
        f"Per budget, the runs within {fit.extras['tolerance']:.0%} of the best loss; their "
        "centre is the optimum. lr_opt = k_lr C^e_lr, batch_opt = k_bs C^e_bs "
        f"({unit} per step; {len(runs)} runs).",
        plot_hparams(fit),
        "Learning rate against batch size at each compute budget, each run coloured by its loss "
        "above the budget's best; the near-optimal band's centre is the optimum that "
        "lr_opt = k_lr C^e_lr and batch_opt = k_bs C^e_bs are fitted to.",
        study.args,
    )


class HparamsLaw(OptimumLaw):
    name = "hparams"
    fields = {"lr": "lr_opt", "batch_size": "batch_size_opt"}
    command = Command(
        "hparams",
        "optimal lr and batch size vs compute",
        "Per compute budget, the runs within 1% of the best loss on a learning-rate x "
        "batch-size grid; their centre is the optimum. Then lr_opt = k_lr C^e_lr and "
        "batch_opt = k_bs C^e_bs; --rules writes them for scaling-train hparams=fitted. "
        "Figure: hparams.",
        arguments=(
            Argument(
                ("--law",),
                {
                    "choices": ["compute", "nd"],
                    "default": "compute",
                    "help": "compute: lr_opt = k_lr C^e_lr, batch_opt = k_bs C^e_bs, per compute "
                    "budget; nd: lr_opt = k_lr N^alpha_lr D^beta_lr, batch_opt = k_bs N^alpha_bs "
                    "D^beta_bs, per (N, D) cell of runs (parameters and tokens each within "
                    "--budget-tol) (compute)",
                },
            ),
            Argument(("--lr-col",), {"help": "CSV column of the peak learning rate (default: lr)"}),
            Argument(
                ("--batch-col",),
                {
                    "help": "CSV column of the batch size in tokens per step (default: "
                    "batch_size, in sequences, which --rules refuses)"
                },
            ),
            Argument(
                ("--rules",),
                {
                    "help": "also write the fitted laws (either --law) to this YAML file, for "
                    "scaling-train hparams=fitted"
                },
            ),
            Argument(
                ("--untrusted-ok",),
                {
                    "action": "store_true",
                    "help": "write --rules even when the fit is not trusted (the file records it)",
                },
            ),
        ),
        order=50,
    )
    report = (ReportEntry("Learning rate and batch size", 50),)

    def predict(self, fit: FitResult, *inputs: Any) -> Any:
        (C,) = inputs
        C, p = np.asarray(C, dtype=float), fit.params
        return {"lr": p["k_lr"] * C ** p["e_lr"], "batch_size": p["k_bs"] * C ** p["e_bs"]}

    def plot(self, fit: FitResult, ax: Any = None, **options: Any) -> Any:
        raise ValueError(
            "a hparams fit is drawn one panel per compute budget, not on one Axes: call "
            "scalinglab.analysis.plot_hparams(fit), which returns the Figure"
        )

    def headline(self, fit: FitResult) -> list[dict[str, Any]]:
        nan = (float("nan"), float("nan"))
        texts = {
            "e_lr": "lr_opt ∝ C^e_lr with e_lr = {}",
            "e_bs": "batch_opt ∝ C^e_bs with e_bs = {}",
        }
        return [
            {"quantity": name, "text": text, "value": fit.params[name], "at": None}
            | dict(zip(("lo", "hi"), fit.ci95.get(name, nan), strict=True))
            for name, text in texts.items()
        ]

    def rules_form(self, fit: FitResult) -> dict[str, Any]:
        """The rules file's form: its header, head, law terms, range fitted and flagged."""
        budgets = [b["C"] for b in fit.extras["budgets"]]
        return {
            "header": RULES_HEADER,
            "head": {"form": "compute", "x": "compute budget C in FLOPs (plan.budget_flops)"},
            "terms": {"coefficient": "k", "exponent": "e"},
            "fitted_range": [float(min(budgets)), float(max(budgets))],
            "flagged": {"flagged_budgets": [float(c) for c in fit.extras["flagged_budgets"]]},
        }

    def analyse(self, study: Any, fitted: dict, **options: Any) -> Any:
        if getattr(study.args, "law", "compute") == "nd":  # --law nd: the (N, D) laws
            return get_law("hparams_nd").analyse(study, fitted)
        return analyse_hparams(study)


RULES_HEADER = """\
# Learning rate and batch size as power laws of the compute budget C (FLOPs), fitted by
# `scaling-fit hparams`. Train with them: scaling-train hparams=fitted hparams_file=THIS_FILE
"""

LAWS = [HparamsLaw()]
