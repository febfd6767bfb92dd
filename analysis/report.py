"""Fit tables (for the terminal, Markdown and W&B) and the report of a study: the text of
report.md, with a summary of the trusted results, and the report.json document (writers.py
writes them).

A fit that is not trusted (FitResult.trusted) is shown as such, with its failing checks, before
any number, and is left out of the summary; parameters a failing check finds not identified are
marked, and quantities derived from an untrusted fit (allocation tables) are not shown as results.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

import scalinglab.analysis.checks as checks
from scalinglab.analysis.registry import get as get_law
from scalinglab.analysis.result import FitResult
from scalinglab.analysis.section import Section

# Bootstrap draws per quantity written to JSON (see capped_draws).
MAX_JSON_DRAWS = 1000


def fit_table(fit: FitResult) -> pd.DataFrame:
    """One row per fitted parameter and derived quantity (FitResult.rows): name, kind
    ("param"/"derived"), value, ci95_lo, ci95_hi (NaN where the fit has no interval), identified
    ("no" where a failing check finds it not identified)."""
    columns = ["name", "kind", "value", "ci95_lo", "ci95_hi", "identified"]
    return pd.DataFrame(fit.rows(), columns=columns)


def checks_table(fit: FitResult) -> pd.DataFrame:
    """The fit's checks (and non-convergence): check, passed ("yes"/"NO"), used (the share of
    the rule's allowance the measured value takes: its margin), detail."""
    rows = [c for c in fit.failed_checks if c["name"] == "converged"] + fit.checks
    return pd.DataFrame(
        [
            {
                "check": c["name"],
                "passed": "yes" if c["passed"] else "NO",
                "used": "" if c.get("used") is None else f"{c['used']:.0%}",
                "detail": c["detail"],
            }
            for c in rows
        ],
        columns=["check", "passed", "used", "detail"],
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


# --------------------------------------------------------------------------------------------
# The summary: trusted results only, and whether the approaches agree


def _interval(value: float, lo: float, hi: float) -> str:
    return f"{value:.3g} [{lo:.3g}, {hi:.3g}]"


def headline_results(section: Section) -> list[dict[str, Any]]:
    """The results a trusted fit stands for (its law's headline): {title, law, approach,
    quantity, value, ci95, at (FLOPs, for tokens_per_param), text}."""
    fit = section.fit
    law = get_law(fit.law)
    base = {"title": section.title, "law": fit.law, "approach": law.approach}
    return [
        base
        | {"quantity": r["quantity"], "value": r["value"], "ci95": [r["lo"], r["hi"]]}
        | {"at": r["at"], "text": r["text"].format(_interval(r["value"], r["lo"], r["hi"]))}
        for r in law.headline(fit)
    ]


def agreements(sections: list[Section]) -> list[dict[str, Any]]:
    """The agreement check of every pair of compute-optimal approaches fitted to the runs
    (checks.agreement), with "fits": the two section titles."""
    approach = {id(s): get_law(s.fit.law).approach for s in sections if s.fit is not None}
    fitted = [s for s in sections if s.fit is not None and approach[id(s)] is not None]
    fitted.sort(key=lambda s: approach[id(s)])
    out = []
    for first, second in combinations(fitted, 2):
        labels = [f"Approach {approach[id(s)]}" for s in (first, second)]
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


def section_lines(section: Section, figure_lines: list[str]) -> list[str]:
    """The section in Markdown; figure_lines: its figures' (the writers saved them)."""
    lines = ["", f"## {section.title}", ""]
    fit = section.fit
    if fit is None and section.skipped:
        return lines + [section.description, "", f"Skipped: {section.skipped}"]
    if fit is None:  # figures of the data, no fit
        return lines + [section.description] + figure_lines
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
    return lines + figure_lines
