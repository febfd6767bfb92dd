"""`scaling-fit`: fit scaling laws to run directories or a table, print them, save JSON and
figures, write a Markdown report, optionally log everything to W&B.

    scaling-fit power outputs/sweeps/ladder --x flops --json fit.json --plot figures/
    scaling-fit chinchilla --csv points.csv --n-col params --d-col tokens --loss-col loss
    scaling-fit isoflop outputs/sweeps/isoflop --plot figures/ --bootstrap 500
    scaling-fit report outputs/sweeps/ --out analysis/report.md --wandb

Every fit checks itself (analysis/checks.py): the terminal and the report show an untrusted fit
as NOT TRUSTED, with its failing checks, before any number. `report` writes report.md and
report.json beside it. --json writes FitResult.to_dict() (with checks and trusted; for `report`,
the report.json document), NaN as null; bootstrap draws (extras["bootstrap"], behind the frontier
bands) are capped at the first 1000 per quantity.

Bad input (no runs, a missing column, too few points) ends with one line on stderr, exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scalinglab.analysis.cli.parser import build_parser as _build_parser
from scalinglab.analysis.registry import get as get_law
from scalinglab.analysis.registry import report_entries


def build_parser() -> Any:
    """scaling-fit's argparse parser (cli/parser.py), described by this module's docstring."""
    return _build_parser(__doc__)


def analyse(study: Any, command: str, x: str | None = None) -> list[Any]:
    """One command's sections: its law's, titled, then the data figures that go with it."""
    law = get_law(command)
    options = {"x": x} if x else {}
    section = law.analyse(study, {}, **options)
    section.title = command + (f" L({x})" if x else "")
    return [section, *law.companions(study, section)]


def run_report(study: Any) -> tuple[list[Any], dict]:
    """Every analysis the data supports, in the registry's order, the others kept with the reason
    they were skipped; the figures of the data (no fit) lead. Writes the report; returns the
    sections and the report.json document."""
    from scalinglab.analysis.report import agreements, report_document
    from scalinglab.analysis.section import Section
    from scalinglab.analysis.writers import write_report

    sections, companions, fitted = [], [], {}
    for entry, law in report_entries():
        try:
            section = law.analyse(study, fitted, **entry.options)
        except ValueError as error:
            section = Section(skipped=str(error))
        section.title, section.law = entry.title, law.name
        sections.append(section)
        companions += law.companions(study, section)
        if section.fit is not None:
            fitted[law.name] = section.fit
    sections = companions + sections
    document = report_document(sections, study.summary, agreements(sections))
    out = write_report(sections, study.args.out, summary=study.summary, document=document)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return sections, document


def show(sections: list[Any]) -> None:
    """Each section in the terminal: untrusted before any number, then its notes."""
    from scalinglab.analysis.report import format_fit

    for section in sections:
        if section.fit is not None:
            print(format_fit(section.fit, section.title))
            for note in section.notes:
                print(note)
        elif section.skipped:
            print(f"== {section.title} == skipped: {section.skipped}")


def write(sections: list[Any], document: dict, study: Any, args: Any) -> None:
    """Everything the options ask to write (writers.py); `document` is what --json writes."""
    from scalinglab.analysis import writers

    if args.json:
        writers.write_json(document, args.json)
    writers.write_files(sections)
    if args.plot:
        writers.write_figures(sections, args.plot)
    if args.wandb:
        files = writers.report_files(sections, Path(args.out)) if args.command == "report" else []
        writers.log_to_wandb([s for s in sections if s.fit is not None], study, files)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message; keep main's int contract
        return int(exit_.code or 0)
    try:
        if args.command == "report":
            from scalinglab.analysis.study import load_study

            study = load_study(args)
        else:
            study = get_law(args.command).load(args)
        print("\n".join(study.summary))
        if args.command == "report":  # its JSON: the report.json document
            sections, document = run_report(study)
        else:  # its JSON: the fit's FitResult.to_dict(), draws capped
            from scalinglab.analysis.report import capped_draws

            sections = analyse(study, args.command, getattr(args, "x", None))
            document = capped_draws(sections[0].fit.to_dict())
        show(sections)
        write(sections, document, study, args)
    except (ValueError, OSError) as error:
        print(f"scaling-fit: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
