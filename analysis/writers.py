"""Everything `scaling-fit` writes: JSON, figures, the report, rules files, the W&B run. Nothing
else in the analysis package writes a file."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scalinglab.analysis.plotting import save
from scalinglab.analysis.registry import get as get_law
from scalinglab.analysis.report import (
    agreements,
    fit_table,
    report_document,
    section_lines,
    strict_json,
)
from scalinglab.analysis.section import Section
from scalinglab.analysis.study import Study


def write_json(document: object, path: str | Path) -> Path:
    """`document` as strict JSON (strict_json) at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(strict_json(document), indent=2) + "\n")
    return path


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


def write_report(
    sections: list[Section], out: str | Path, *, summary: list[str], document: dict | None = None
) -> Path:
    """Write the Markdown report to `out`, report.json beside it (same stem, .json: `document`,
    report_document's, made here when not given) and the figures (PNG). `summary`: lines
    describing the data, shown first; then the Summary of trusted results and agreement, then
    one section per analysis."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if document is None:
        document = report_document(sections, summary, agreements(sections))
    lines = ["# Scaling-law report", "", "## Data", ""]
    lines += [f"- {line}" for line in summary]
    lines += ["", "## Summary", ""]
    lines += [f"- {line}" for line in document["summary"]["lines"]]
    for section in sections:
        lines += section_lines(section, _figure_lines(section, out.parent))
    out.write_text("\n".join(lines) + "\n")
    write_json(document, out.with_suffix(".json"))
    return out


def write_figures(sections: Sequence[Section], directory: str | Path) -> None:
    """--plot: every section's figures as PNG and SVG."""
    for section in sections:
        for name, figure in section.figures.items():
            save(figure, directory, name)


def write_files(sections: Sequence[Section]) -> None:
    """The files sections ask for (a rules file), {path: text}."""
    for section in sections:
        for path, text in section.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)


def _pixels(figure: Figure) -> np.ndarray:
    """The figure rendered to RGBA pixels: wandb.Image(figure) itself needs pyplot's state."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def report_files(sections: list[Section], out: Path) -> list[Path]:
    """What `write_report` wrote: the report, report.json beside it, each figure's PNG."""
    figures = [out.parent / f"{name}.png" for section in sections for name in section.figures]
    return [out, out.with_suffix(".json"), *figures]


def log_to_wandb(sections: list[Section], study: Study, report: list[Path] = ()) -> None:
    """Log each fit's table, values and figures to a W&B run of job_type "analysis", in the
    sweep's group so it sits beside the training runs; the `report` files (report.md,
    report.json, figures) as its `analysis-report` artifact."""
    import wandb

    run = wandb.init(
        project=study.args.wandb_project,
        entity=study.args.wandb_entity,
        group=study.sweep_id,
        job_type="analysis",
        config={
            "command": study.args.command,
            "loss": study.args.loss,
            "n_bootstrap": getattr(study.args, "bootstrap", None),  # transfer: none
            "seed": getattr(study.args, "seed", None),
        },
    )
    try:
        for section in sections:
            if section.fit is None:
                continue
            law = get_law(section.fit.law).wandb_prefix(section)
            run.log(
                {
                    f"{law}/fit": wandb.Table(dataframe=fit_table(section.fit)),
                    **{
                        f"{law}/{name}": wandb.Image(_pixels(fig))
                        for name, fig in section.figures.items()
                    },
                }
            )
            values = section.fit.params | section.fit.derived | {"trusted": section.fit.trusted}
            run.summary.update({f"{law}/{name}": value for name, value in values.items()})
        if report:
            name = re.sub(r"[^\w.-]", "_", f"report-{study.sweep_id or 'runs'}")  # W&B's charset
            artifact = wandb.Artifact(name, type="analysis-report")
            for path in report:
                artifact.add_file(str(path))
            run.log_artifact(artifact)
    finally:
        wandb.finish()
