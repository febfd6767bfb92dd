"""Fit tables (for the terminal, Markdown and W&B) and the report of a study: report.md, with a
summary of the trusted results, and report.json beside it.

A fit that is not trusted (FitResult.trusted) is shown as such, with its failing checks, before
any number, and is left out of the summary; parameters a failing check finds not identified are
marked, and quantities derived from an untrusted fit (allocation tables) are not shown as results.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scalinglab.analysis import checks
from scalinglab.analysis.bootstrap import percentile_interval
from scalinglab.analysis.laws import optimal_allocation
from scalinglab.analysis.plots import save
from scalinglab.analysis.result import FitResult

# Bootstrap draws per quantity written to JSON (see capped_draws).
MAX_JSON_DRAWS = 1000
# Chinchilla's three approaches to the compute-optimal frontier, by law.
APPROACH = {"envelope": 1, "isoflop": 2, "chinchilla": 3}


def fit_table(fit: FitResult) -> pd.DataFrame:
    """One row per fitted parameter and derived quantity: name, kind ("param"/"derived"),
    value, ci95_lo, ci95_hi (NaN where the fit has no interval), identified ("no" where a failing
    check finds it not identified)."""
    rows = []
    not_identified = fit.not_identified
    for kind, values in (("param", fit.params), ("derived", fit.derived)):
        for name, value in values.items():
            if kind == "derived" and name in fit.params:
                continue  # isoflop/envelope/hparams report their coefficients in both
            lo, hi = fit.ci95.get(name, (math.nan, math.nan))
            rows.append(
                {
                    "name": name,
                    "kind": kind,
                    "value": value,
                    "ci95_lo": lo,
                    "ci95_hi": hi,
                    "identified": "no" if name in not_identified else "yes",
                }
            )
    columns = ["name", "kind", "value", "ci95_lo", "ci95_hi", "identified"]
    return pd.DataFrame(rows, columns=columns)


def checks_table(fit: FitResult) -> pd.DataFrame:
    """The fit's checks (and non-convergence): check, passed ("yes"/"NO"), detail."""
    rows = [c for c in fit.failed_checks if c["name"] == "converged"] + fit.checks
    return pd.DataFrame(
        [
            {"check": c["name"], "passed": "yes" if c["passed"] else "NO", "detail": c["detail"]}
            for c in rows
        ],
        columns=["check", "passed", "detail"],
    )


def fit_status(fit: FitResult) -> str:
    """ "converged" or "NOT converged", with the fit's message."""
    state = "converged" if fit.converged else "NOT converged"
    return f"{state}: {fit.message}" if fit.message else state


def trust_lines(fit: FitResult) -> list[str]:
    """What to read before the numbers: "NOT TRUSTED" and each failing check, or "trusted"."""
    if fit.trusted:
        names = ", ".join(dict.fromkeys(c["name"] for c in fit.checks))
        return [f"trusted: every check passed ({names})"]
    return ["NOT TRUSTED:"] + [f"  - {c['name']}: {c['detail']}" for c in fit.failed_checks]


def format_fit(fit: FitResult, title: str = "") -> str:
    """The fit as readable text: title, whether it is trusted (failing checks first), the table
    of values with 95% intervals, points (and what each is: extras["points_are"]), status."""
    table = fit_table(fit).to_string(index=False, float_format=lambda v: f"{v:.4g}")
    return "\n".join(
        [
            f"== {title or fit.law} ==",
            *trust_lines(fit),
            table,
            f"points: {fit.n_points}"
            + (f" ({fit.extras['points_are']})" if "points_are" in fit.extras else "")
            + f"   {fit_status(fit)}",
        ]
    )


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table; floats with 4 significant digits."""

    def cell(value: object) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


@dataclass
class Section:
    """One analysis: its fit, figures (by file name) with a one-line caption each, and extra
    tables, or why it was skipped. law: the command that made it (power, isoflop, ...)."""

    title: str = ""
    description: str = ""
    fit: FitResult | None = None
    figures: dict[str, Figure] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    skipped: str = ""
    law: str = ""


# --------------------------------------------------------------------------------------------
# The summary: trusted results only, and whether the approaches agree


def largest_budget(fit: FitResult) -> float:
    """The largest compute budget (FLOPs) a compute-optimal fit measured: the largest IsoFLOP
    budget or envelope point used, or the largest 6ND of a chinchilla fit's runs."""
    if fit.law == "isoflop":
        return max(b["C"] for b in fit.extras["budgets"] if b["in_range"])
    if fit.law == "envelope":
        return max(p["C"] for p in fit.extras["envelope"] if p["in_range"])
    return float(fit.extras["compute_range"][1])


def tokens_per_param(fit: FitResult, C: float) -> tuple[float, float, float]:
    """D_opt / N_opt at budget C (FLOPs) of a compute-optimal fit, and its 95% bootstrap interval
    (each resample's law evaluated at C; NaN without draws)."""
    n_opt, d_opt = optimal_allocation(fit.law, fit.derived, C)
    draws = {k: np.asarray(v, float) for k, v in fit.extras.get("bootstrap", {}).items()}
    if draws:
        n_draw, d_draw = optimal_allocation(fit.law, draws, C)
        lo, hi = percentile_interval(d_draw / n_draw)
    else:
        lo = hi = math.nan
    return float(d_opt / n_opt), lo, hi


def _value(fit: FitResult, name: str) -> tuple[float, float, float]:
    value = fit.params.get(name, fit.derived.get(name, math.nan))
    lo, hi = fit.ci95.get(name, (math.nan, math.nan))
    return float(value), float(lo), float(hi)


def _interval(value: float, lo: float, hi: float) -> str:
    return f"{value:.3g} [{lo:.3g}, {hi:.3g}]"


def headline_results(section: Section) -> list[dict[str, Any]]:
    """The results a trusted fit stands for: {title, law, approach, quantity, value, ci95, at
    (FLOPs, for tokens_per_param), text}."""
    fit = section.fit
    base = {"title": section.title, "law": fit.law, "approach": APPROACH.get(fit.law)}
    results = []

    def add(quantity: str, text: str, value: float, lo: float, hi: float, at=None) -> None:
        results.append(
            base
            | {"quantity": quantity, "value": value, "ci95": [lo, hi], "at": at}
            | {"text": text.format(_interval(value, lo, hi))}
        )

    if fit.law in APPROACH:
        add("a", "Compute-optimal exponent a = {}", *_value(fit, "a"))
        C = largest_budget(fit)
        text = f"{{}} tokens per parameter at C = {C:.3g} FLOPs, the largest budget measured"
        add("tokens_per_param", text, *tokens_per_param(fit, C), at=C)
    elif fit.law == "power":
        for name in ("alpha", "E"):
            if name in fit.params:
                add(name, f"{name} = {{}}", *_value(fit, name))
    elif fit.law == "hparams":
        add("e_lr", "lr_opt ∝ C^e_lr with e_lr = {}", *_value(fit, "e_lr"))
        add("e_bs", "batch_opt ∝ C^e_bs with e_bs = {}", *_value(fit, "e_bs"))
    return results


def agreements(sections: list[Section]) -> list[dict[str, Any]]:
    """The agreement check of every pair of compute-optimal approaches fitted to the runs
    (checks.agreement), with "fits": the two section titles."""
    fitted = [s for s in sections if s.fit is not None and s.fit.law in APPROACH]
    fitted.sort(key=lambda s: APPROACH[s.fit.law])
    out = []
    for first, second in combinations(fitted, 2):
        labels = [f"Approach {APPROACH[s.fit.law]}" for s in (first, second)]
        result = checks.agreement((labels[0], first.fit), (labels[1], second.fit))
        out.append(result | {"fits": [first.title, second.title]})
    return out


def headline(sections: list[Section], agreement: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's headline: {"lines": the Markdown bullets, "results": headline_results of
    every trusted fit, "agreement": one line per comparison, "not_trusted": [{title, law, check,
    detail}] with each untrusted fit's first failing check, "skipped": [{title, reason}]}."""
    results, not_trusted, skipped, lines = [], [], [], []
    for section in sections:
        fit = section.fit
        if fit is None:
            if section.skipped:  # not a data-only section such as the training curves
                skipped.append({"title": section.title, "reason": section.skipped})
        elif fit.trusted:
            found = headline_results(section)
            results += found
            if found:
                texts = [r["text"] for r in found]
                texts[0] += f" ({section.title})"
                lines.append("; ".join(texts))
        else:
            first = fit.failed_checks[0]
            not_trusted.append(
                {"title": section.title, "law": fit.law}
                | {"check": first["name"]}
                | {"detail": first["detail"]}
            )
    if not results:
        lines.append("No fit is trusted: no result to report.")
    agreement_lines = [a["detail"] for a in agreement]
    lines += agreement_lines
    lines += [f"Not trusted: {n['title']} ({n['check']}: {n['detail']})" for n in not_trusted]
    lines += [f"Skipped: {s['title']} ({s['reason']})" for s in skipped]
    return {
        "lines": lines,
        "results": results,
        "agreement": agreement_lines,
        "not_trusted": not_trusted,
        "skipped": skipped,
    }


# --------------------------------------------------------------------------------------------
# JSON


def capped_draws(fit: dict) -> dict:
    """A fit's to_dict() with at most MAX_JSON_DRAWS bootstrap draws per quantity, so the JSON
    stays small at any bootstrap count. The first k draws of a seeded bootstrap are themselves a
    bootstrap of k resamples, so a band recomputed from the file is valid, only noisier; ci95
    keeps using every draw. A capped fit says so in extras["bootstrap_capped_at"]."""
    draws = fit["extras"].get("bootstrap", {})
    if all(len(v) <= MAX_JSON_DRAWS for v in draws.values()):
        return fit
    capped = {name: v[:MAX_JSON_DRAWS] for name, v in draws.items()}
    extras = fit["extras"] | {"bootstrap": capped, "bootstrap_capped_at": MAX_JSON_DRAWS}
    return fit | {"extras": extras}


def strict_json(value: object) -> object:
    """NaN and infinities as null: JSON has no such numbers and strict parsers (jq) reject them."""
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(document: object, path: str | Path) -> Path:
    """`document` as strict JSON (strict_json) at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(strict_json(document), indent=2) + "\n")
    return path


def report_document(
    sections: list[Section], data: list[str], agreement: list[dict[str, Any]]
) -> dict[str, Any]:
    """report.json: {"summary": headline(...), "data": the data lines, "fits": each section's
    FitResult.to_dict() (bootstrap draws capped) with its "title", or {law, title, skipped} for a
    skipped one, "agreement": the agreement checks}."""
    fits = []
    for section in sections:
        if section.fit is None and section.skipped:
            fits.append({"law": section.law, "title": section.title, "skipped": section.skipped})
        elif section.fit is None:
            continue  # figures of the data, not a fit
        else:
            fits.append({"title": section.title} | capped_draws(section.fit.to_dict()))
    return {
        "summary": headline(sections, agreement),
        "data": list(data),
        "fits": fits,
        "agreement": agreement,
    }


# --------------------------------------------------------------------------------------------
# Markdown


def _section_lines(section: Section, out_dir: Path) -> list[str]:
    lines = ["", f"## {section.title}", ""]
    fit = section.fit
    if fit is None and section.skipped:
        return lines + [section.description, "", f"Skipped: {section.skipped}"]
    if fit is None:  # figures of the data, no fit
        return lines + [section.description] + _figure_lines(section, out_dir)
    if fit.trusted:
        lines += ["Trusted: every check passed.", ""]
    else:
        lines += ["**Not trusted.**", ""]
        lines += [f"- {c['name']}: {c['detail']}" for c in fit.failed_checks]
        lines += [""]
    lines += [section.description, "", "Checks:", "", markdown_table(checks_table(fit)), ""]
    lines += [markdown_table(fit_table(fit)), ""]
    if fit.not_identified:
        names = ", ".join(sorted(fit.not_identified))
        lines += [f"Not identified (not results): {names}.", ""]
    lines += [f"Points: {fit.n_points}; {fit_status(fit)}"]
    for caption, table in section.tables.items():
        if fit.trusted:
            lines += ["", f"{caption}:", "", markdown_table(table)]
        else:
            lines += ["", f"{caption}: not a result, the fit is not trusted (not shown)."]
    return lines + _figure_lines(section, out_dir)


def _figure_lines(section: Section, out_dir: Path) -> list[str]:
    """Each figure saved as PNG (what the report shows; `--plot DIR` writes SVG too) and linked,
    its caption in italics below it."""
    lines = []
    for name, figure in section.figures.items():
        (png,) = save(figure, out_dir, name, formats=("png",))
        lines += ["", f"![{name}]({png.name})"]
        if section.captions.get(name):
            lines += ["", f"*{section.captions[name]}*"]
    return lines


def write_report(sections: list[Section], out: str | Path, *, summary: list[str]) -> Path:
    """Write the Markdown report to `out`, report.json beside it (same stem, .json; see
    report_document) and the figures (PNG). `summary`: lines describing the data, shown
    first; then the Summary of trusted results and agreement, then one section per analysis."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    agreement = agreements(sections)
    document = report_document(sections, summary, agreement)
    lines = ["# Scaling-law report", "", "## Data", ""]
    lines += [f"- {line}" for line in summary]
    lines += ["", "## Summary", ""]
    lines += [f"- {line}" for line in document["summary"]["lines"]]
    for section in sections:
        lines += _section_lines(section, out.parent)
    out.write_text("\n".join(lines) + "\n")
    write_json(document, out.with_suffix(".json"))
    return out
