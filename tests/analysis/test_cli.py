"""`scaling-fit` end to end on fake run directories and a CSV table whose truth is known."""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from scalinglab.analysis.cli import build_parser, main
from scalinglab.analysis.frontier import frontier_band
from scalinglab.analysis.load import completed, load_runs
from scalinglab.analysis.result import FitResult
from scalinglab.analysis.section import Section
from scalinglab.analysis.writers import write_report

from .fake_runs import (
    HPARAM_BUDGETS,
    HPARAM_TRUTH,
    LADDER_SIZES,
    SEQ_LEN,
    TOKENS_PER_PARAM,
    TRUTH,
    chinchilla_loss,
    write_run,
)

FAST = ["--bootstrap", "8"]


def fit_json(tmp_path: Path, argv: list[str]) -> dict:
    out = tmp_path / "fit.json"
    assert main([*argv, *FAST, "--json", str(out)]) == 0

    def no_nan(word: str) -> None:
        raise AssertionError(f"{word} is not JSON")

    return json.loads(out.read_text(), parse_constant=no_nan)


def assert_figures(directory: Path, names: list[str]) -> None:
    for name in names:
        for suffix in ("png", "svg"):
            assert (directory / f"{name}.{suffix}").stat().st_size > 1000, name


def test_power_in_params_and_compute(ladder_sweep: Path, tmp_path: Path) -> None:
    fit = fit_json(tmp_path, ["power", str(ladder_sweep), "--plot", str(tmp_path / "fig")])
    assert {"law", "params", "ci95", "derived", "n_points"} <= set(fit)
    assert fit["law"] == "power" and fit["n_points"] == 8
    assert fit["params"]["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.01)
    assert fit["params"]["E"] == pytest.approx(TRUTH["E"], abs=0.02)
    lo, hi = fit["ci95"]["alpha"]
    assert lo <= fit["params"]["alpha"] <= hi
    assert_figures(tmp_path / "fig", ["loss_vs_n_params"])

    fit = fit_json(tmp_path, ["power", str(ladder_sweep), "--x", "flops"])
    assert fit["params"]["alpha"] == pytest.approx(TRUTH["alpha"] / 2, abs=0.01)


def test_power_averages_seeds_before_taking_the_best(tmp_path: Path, capsys) -> None:
    # Two data orders per size, the truth -+ 0.05: their mean is the truth; the better of the
    # two would be 0.05 low everywhere, and E with it.
    for k, n_params in enumerate(LADDER_SIZES):
        truth = chinchilla_loss(n_params, TOKENS_PER_PARAM * n_params)
        for seed, shift in ((0, -0.05), (1, 0.05)):
            write_run(
                tmp_path / "runs" / f"{k}_{seed}",
                run_id=f"lad{k}_{seed}",
                sweep_id="seeds",
                n_params=n_params,
                tokens=TOKENS_PER_PARAM * n_params,
                loss=truth + shift,
                seed=seed,
                overrides=[f"model=gpt_{k}", f"seed={seed}"],
            )
    fit = fit_json(tmp_path, ["power", str(tmp_path / "runs")])
    assert "points: 8 (each the mean of 2 seeds)" in capsys.readouterr().out
    assert fit["n_points"] == len(LADDER_SIZES)
    assert fit["params"]["E"] == pytest.approx(TRUTH["E"], abs=0.02)
    assert fit["params"]["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.01)


def test_power_in_compute_from_a_table(tmp_path: Path) -> None:
    # A published-style (C, loss) table: L = E + A' C^-alpha/2 along the ladder (C = 120 N^2).
    table = tmp_path / "compute.csv"
    n_params = np.array(LADDER_SIZES)
    loss = chinchilla_loss(n_params, TOKENS_PER_PARAM * n_params)
    pd.DataFrame({"compute": 6 * TOKENS_PER_PARAM * n_params**2, "L": loss}).to_csv(table)
    argv = ["power", "--csv", str(table), "--c-col", "compute", "--loss-col", "L", "--x", "flops"]
    fit = fit_json(tmp_path, argv)
    assert fit["params"]["alpha"] == pytest.approx(TRUTH["alpha"] / 2, rel=1e-3)
    assert fit["params"]["E"] == pytest.approx(TRUTH["E"], rel=1e-3)


def test_chinchilla_from_runs(isoflop_sweep: Path, tmp_path: Path, capsys) -> None:
    fit = fit_json(tmp_path, ["chinchilla", str(isoflop_sweep), "--plot", str(tmp_path)])
    assert set(fit["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert {"a", "b"} <= set(fit["derived"])
    for name, value in TRUTH.items():
        assert fit["params"][name] == pytest.approx(value, rel=0.02), name
    assert fit["derived"]["a"] == pytest.approx(0.5, abs=0.01)
    assert fit["n_points"] == 15
    printed = capsys.readouterr().out
    assert "2 runs left out: 1 failed, 1 lost" in printed
    assert re.search(r"alpha\s+param\s+0\.3", printed)
    assert_figures(tmp_path, ["chinchilla", "frontier_chinchilla"])


def test_chinchilla_from_csv_with_column_names(points_csv: Path, tmp_path: Path) -> None:
    fit = fit_json(
        tmp_path,
        [
            "chinchilla",
            "--csv",
            str(points_csv),
            "--n-col",
            "params",
            "--d-col",
            "data",
            "--loss-col",
            "Loss",
        ],
    )
    assert fit["params"]["alpha"] == pytest.approx(TRUTH["alpha"], rel=0.02)
    assert fit["params"]["E"] == pytest.approx(TRUTH["E"], rel=0.02)


def test_isoflop_from_runs(isoflop_sweep: Path, tmp_path: Path) -> None:
    fit = fit_json(tmp_path, ["isoflop", str(isoflop_sweep), "--plot", str(tmp_path)])
    assert fit["law"] == "isoflop" and fit["trusted"] is True
    assert [c["name"] for c in fit["checks"]] == [
        "design",
        "centering",
        "intervals",
        "extrapolation",
    ]
    assert fit["derived"]["a"] == pytest.approx(0.5, abs=0.02)
    assert fit["derived"]["b"] == pytest.approx(0.5, abs=0.02)
    assert {"k_N", "k_D"} <= set(fit["derived"])
    # Budgets are the runs' `budget.flops` overrides, not their slightly different FLOPs.
    assert [b["C"] for b in fit["extras"]["budgets"]] == pytest.approx([1e15, 1e16, 1e17])
    assert_figures(tmp_path, ["isoflop"])


def test_isoflop_json_keeps_bootstrap_draws_capped(isoflop_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "many.json"
    assert main(["isoflop", str(isoflop_sweep), "--bootstrap", "1200", "--json", str(out)]) == 0
    assert out.stat().st_size < 200_000  # 4 x 1000 draws, not 4 x 1200
    many = json.loads(out.read_text())
    fit = fit_json(tmp_path, ["isoflop", str(isoflop_sweep)])  # strict JSON, 8 resamples
    assert many["extras"]["n_bootstrap_ok"] > 1000 and many["extras"]["bootstrap_capped_at"] == 1000
    for document, n_draws in ((many, 1000), (fit, fit["extras"]["n_bootstrap_ok"])):
        draws = document["extras"]["bootstrap"]
        assert set(draws) == {"k_N", "a", "k_D", "b"}
        assert {len(v) for v in draws.values()} == {n_draws}
    assert "bootstrap_capped_at" not in fit["extras"]
    lo, hi = frontier_band(FitResult.from_dict(fit), [1e15, 1e18])  # rebuilt from the JSON
    assert np.all(lo < hi)


def test_isoflop_groups_flops_into_budgets(isoflop_sweep: Path, tmp_path: Path, capsys) -> None:
    # The runs' actual FLOPs, up to 4% apart within a budget, as a table without budgets.
    table = tmp_path / "runs.csv"
    completed(load_runs(isoflop_sweep))[["n_params", "tokens", "flops", "val_loss"]].to_csv(table)
    argv = ["isoflop", "--csv", str(table), "--loss-col", "val_loss"]
    fit = fit_json(tmp_path, argv)
    budgets = [b["C"] for b in fit["extras"]["budgets"]]
    assert budgets == pytest.approx([1.02e15, 1.02e16, 1.02e17], rel=0.01)
    assert fit["derived"]["a"] == pytest.approx(0.5, abs=0.02)
    assert main([*argv, *FAST, "--budget-tol", "0.001"]) == 2
    assert "found 15 budgets" in one_line_error(capsys)


def test_envelope_from_training_curves(ladder_sweep: Path, tmp_path: Path) -> None:
    fit = fit_json(tmp_path, ["envelope", str(ladder_sweep), "--plot", str(tmp_path)])
    assert fit["law"] == "envelope"
    assert fit["derived"]["a"] == pytest.approx(0.5, abs=0.1)
    assert_figures(tmp_path, ["curves", "frontier_envelope"])


def test_hparams(hparam_sweep: Path, tmp_path: Path) -> None:
    fit = fit_json(tmp_path, ["hparams", str(hparam_sweep), "--plot", str(tmp_path)])
    assert fit["law"] == "hparams"
    assert fit["params"]["e_lr"] == pytest.approx(HPARAM_TRUTH["e_lr"], abs=0.01)
    assert fit["params"]["e_bs"] == pytest.approx(HPARAM_TRUTH["e_bs"], abs=0.01)
    assert fit["params"]["k_lr"] == pytest.approx(HPARAM_TRUTH["k_lr"], rel=0.05)
    assert_figures(tmp_path, ["hparams"])


def test_hparams_rules_file_holds_the_laws_in_tokens(hparam_sweep: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    assert main(["hparams", str(hparam_sweep), *FAST, "--rules", str(rules)]) == 0
    laws = yaml.safe_load(rules.read_text())
    assert rules.read_text().startswith("# Learning rate and batch size as power laws")
    assert laws["lr"]["exponent"] == pytest.approx(HPARAM_TRUTH["e_lr"], abs=0.01)
    assert laws["lr"]["coefficient"] == pytest.approx(HPARAM_TRUTH["k_lr"], rel=0.05)
    # The runs' batch law is in sequences of SEQ_LEN tokens; the file's is in tokens per step.
    assert laws["batch_tokens"]["exponent"] == pytest.approx(HPARAM_TRUTH["e_bs"], abs=0.01)
    assert laws["batch_tokens"]["coefficient"] == pytest.approx(
        HPARAM_TRUTH["k_bs"] * SEQ_LEN, rel=0.1
    )
    for law in ("lr", "batch_tokens"):
        lo, hi = laws[law]["ci95"]["exponent"]
        assert lo <= laws[law]["exponent"] <= hi
    budgets = [min(HPARAM_BUDGETS), max(HPARAM_BUDGETS)]  # within a step of the nominal
    assert laws["fitted_range"] == pytest.approx(budgets, rel=1e-3)
    assert laws["sources"] == [str(hparam_sweep)]


def test_no_rules_file_from_untrusted_laws(isoflop_sweep: Path, tmp_path: Path, capsys) -> None:
    # One learning rate and batch size per budget: nothing for training to follow.
    rules = tmp_path / "rules.yaml"
    assert main(["hparams", str(isoflop_sweep), *FAST, "--rules", str(rules)]) == 2
    assert "not trusted, so no rules file (design: the learning rate" in one_line_error(capsys)
    assert not rules.exists()


@pytest.fixture(scope="module")
def isoflop_report(isoflop_sweep: Path, tmp_path_factory: pytest.TempPathFactory):
    """`report` on the IsoFLOP sweep, once: (report.md, its text, report.json, the --json file)."""
    out = tmp_path_factory.mktemp("report") / "out" / "report.md"
    fits = out.parent.parent / "fits.json"
    assert main(["report", str(isoflop_sweep), *FAST, "--out", str(out), "--json", str(fits)]) == 0

    def no_nan(word: str) -> None:
        raise AssertionError(f"{word} is not JSON")

    document = json.loads(out.with_suffix(".json").read_text(), parse_constant=no_nan)
    return out, out.read_text(), document, json.loads(fits.read_text())


def section(text: str, title: str) -> list[str]:
    """The non-empty lines of a report section, title excluded."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    lines = text[start : None if end < 0 else end].splitlines()[1:]
    return [line for line in lines if line.strip()]


def test_report_links_existing_figures_with_captions(isoflop_report) -> None:
    out, text, _, _ = isoflop_report
    for title in ["Power law L(N)", "Chinchilla", "IsoFLOP", "envelope", "Learning rate"]:
        assert title in text
    assert "2 runs left out: 1 failed, 1 lost" in text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert {"isoflop.png", "chinchilla.png", "curves.png"} <= set(figures)
    assert all((out.parent / name).exists() for name in figures)
    assert text.index("![curves](curves.png)") < text.index("## Power law L(N)")  # data first
    lines = text.splitlines()
    for name in figures:  # an italic one-line caption under every figure
        below = lines[lines.index(f"![{name[:-4]}]({name})") + 2]
        assert below.startswith("*") and below.endswith("*") and len(below) > 40, name


def test_report_json_is_written_beside_the_markdown(isoflop_report) -> None:
    _, _, document, from_json_option = isoflop_report
    assert from_json_option == document  # --json writes the same document
    assert set(document) == {"summary", "data", "fits", "agreement"}
    assert "2 runs left out: 1 failed, 1 lost" in document["data"]
    fits = {fit["title"]: fit for fit in document["fits"]}
    assert sorted(fit["law"] for fit in fits.values()) == [
        "chinchilla",
        "envelope",
        "hparams",
        "isoflop",
        "power",
        "power",
    ]
    for fit in fits.values():
        assert isinstance(fit["trusted"], bool) and fit["checks"]
        assert all(set(c) >= {"name", "passed", "detail"} for c in fit["checks"])
    assert fits["IsoFLOP profiles, Approach 2"]["trusted"]
    assert fits["Chinchilla L(N, D), Approach 3"]["trusted"]
    # Constant learning rate and batch size: the hyperparameter fit is there, not trusted.
    hparams = fits["Learning rate and batch size"]
    assert not hparams["trusted"]
    assert any("learning rate does not vary" in c["detail"] for c in hparams["checks"])
    # Three approaches on the same runs: three comparisons, 2 and 3 agreeing.
    pairs = {tuple(a["fits"]): a for a in document["agreement"]}
    assert len(pairs) == 3 and all(isinstance(a["passed"], bool) for a in pairs.values())
    assert pairs[("IsoFLOP profiles, Approach 2", "Chinchilla L(N, D), Approach 3")]["passed"]


def test_report_summary_lists_trusted_results_only(isoflop_report) -> None:
    _, text, document, _ = isoflop_report
    summary = document["summary"]
    by_fit = {(r["title"], r["quantity"]): r for r in summary["results"]}
    a = by_fit[("IsoFLOP profiles, Approach 2", "a")]
    assert a["approach"] == 2 and a["value"] == pytest.approx(0.5, abs=0.02)
    assert a["ci95"][0] <= a["value"] <= a["ci95"][1]
    ratio = by_fit[("Chinchilla L(N, D), Approach 3", "tokens_per_param")]
    assert ratio["value"] == pytest.approx(20, rel=0.05) and ratio["at"] == pytest.approx(
        1e17, rel=0.05
    )
    untrusted = {n["title"]: n for n in summary["not_trusted"]}
    assert untrusted["Learning rate and batch size"]["check"] == "design"
    assert not any(r["title"] in untrusted for r in summary["results"])
    lines = section(text, "Summary")
    assert lines == [f"- {line}" for line in summary["lines"]]
    assert lines[0].startswith("- Compute-optimal exponent a = ")
    assert "- Not trusted: Learning rate and batch size (design: the learning rate" in "\n".join(
        lines
    )
    assert not any("e_lr" in line for line in lines)
    assert any("Approach 2 and Approach 3 agree: intervals overlap" in line for line in lines)
    assert text.index("## Data") < text.index("## Summary") < text.index("## Power law L(N)")


def test_untrusted_fit_says_so_before_any_number(isoflop_report) -> None:
    _, text, document, _ = isoflop_report
    lines = section(text, "Learning rate and batch size")
    assert lines[0] == "**Not trusted.**"
    first_table = next(i for i, line in enumerate(lines) if line.startswith("|"))
    reasons = [line for line in lines[1:first_table] if line.startswith("- ")]
    fit = next(f for f in document["fits"] if f["law"] == "hparams")
    failed = [c for c in fit["checks"] if not c["passed"]]
    assert reasons == [f"- {c['name']}: {c['detail']}" for c in failed]
    assert lines[first_table].startswith("| check | passed | used | detail |")
    assert "| k_bs | param | 4096 | 4096 | 4096 | no |" in lines
    assert section(text, "IsoFLOP profiles, Approach 2")[0] == "Trusted: every check passed."


def test_report_json_keeps_skipped_fits_and_hides_untrusted_allocations(tmp_path: Path) -> None:
    untrusted = FitResult(
        "isoflop",
        {"k_N": 1.0, "a": 0.5, "k_D": 1.0, "b": 0.5},
        checks=[{"name": "centering", "passed": False, "detail": "off centre", "params": []}],
    )
    table = pd.DataFrame({"C (FLOPs)": [1e20], "N_opt": [1e9]})
    sections = [
        Section(title="IsoFLOP", law="isoflop", skipped="IsoFLOP needs two or more budgets"),
        Section(title="Envelope", fit=untrusted, tables={"Compute-optimal allocation": table}),
    ]
    out = write_report(sections, tmp_path / "r" / "report.md", summary=["1 run"])
    document = json.loads(out.with_suffix(".json").read_text())
    assert document["fits"][0] == {
        "law": "isoflop",
        "title": "IsoFLOP",
        "skipped": "IsoFLOP needs two or more budgets",
    }
    assert document["fits"][1]["trusted"] is False and document["summary"]["results"] == []
    assert document["summary"]["skipped"] == [
        {"title": "IsoFLOP", "reason": "IsoFLOP needs two or more budgets"}
    ]
    text = out.read_text()
    assert "No fit is trusted" in text
    assert "Compute-optimal allocation: not a result, the fit is not trusted" in text
    assert "1e+09" not in text


def test_terminal_output_says_not_trusted_before_the_table(isoflop_sweep: Path, capsys) -> None:
    assert main(["power", str(isoflop_sweep), "--x", "flops", *FAST]) == 0
    printed = capsys.readouterr().out.splitlines()
    start = printed.index("== power L(flops) ==")
    assert printed[start + 1] == "NOT TRUSTED:"
    assert printed[start + 2] == (
        "  - design: 3 points for 3 parameters; the law needs at least 5 (two more points than "
        "parameters)"
    )
    table = next(
        i for i in range(start, len(printed)) if printed[i].split()[:2] == ["name", "kind"]
    )
    assert all(line.startswith("  - ") for line in printed[start + 2 : table])


def test_chinchilla_on_a_ladder_is_not_trusted(ladder_sweep: Path, tmp_path: Path, capsys) -> None:
    # One tokens-per-parameter ratio: N and D cannot be told apart, and the fit says so.
    fit = fit_json(tmp_path, ["chinchilla", str(ladder_sweep)])
    assert not fit["trusted"]
    (design,) = [
        c
        for c in fit["checks"]
        if c["name"] == "design" and not c["passed"] and "log D" in c["detail"]
    ]
    assert "one tokens-per-parameter ratio" in design["detail"]
    assert "NOT TRUSTED" in capsys.readouterr().out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["power", "{empty}"], "no runs found"),
        (["power"], "give run or sweep directories"),
        (["chinchilla", "--csv", "{csv}", "--n-col", "N"], "no column 'N'"),
        (
            [
                "isoflop",
                "--csv",
                "{csv}",
                "--n-col",
                "params",
                "--d-col",
                "data",
                "--loss-col",
                "Loss",
                "--budget-col",
                "budget",
            ],
            "--budget-col 'budget' is not a column",
        ),
        (["isoflop", "{ladder}"], "IsoFLOP needs two or more compute budgets"),
        (["power", "{one_run}"], "power law"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv, message, tmp_path, points_csv, ladder_sweep, capsys
) -> None:
    paths = {
        "empty": tmp_path,
        "csv": points_csv,
        "ladder": ladder_sweep,
        "one_run": ladder_sweep / "0",
    }
    assert main([arg.format(**paths) for arg in argv] + FAST) == 2
    err = one_line_error(capsys)
    assert err.startswith("scaling-fit: error:") and message in err


def test_wandb_offline_run(isoflop_sweep: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["isoflop", str(isoflop_sweep), *FAST, "--wandb"]) == 0
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    media = runs[0] / "files" / "media"
    assert {p.name.split("_0_")[0] for p in media.glob("images/isoflop/*.png")} == {"isoflop"}
    assert list(media.glob("table/isoflop/fit_*.table.json"))


def test_every_subcommand_and_option_says_what_it_does() -> None:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {choice.dest: choice.help for choice in subparsers._choices_actions}
    assert (
        set(listed)
        == set(subparsers.choices)
        == {
            "power",
            "chinchilla",
            "isoflop",
            "envelope",
            "hparams",
            "transfer",
            "batch",
            "report",
        }
    )
    for name, command in subparsers.choices.items():
        assert listed[name] and command.description, name
        for action in command._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
    assert "--wandb-entity" in subparsers.choices["report"].format_help()


def test_wandb_run_goes_to_the_given_project_and_entity(isoflop_sweep: Path, monkeypatch) -> None:
    started: dict = {}

    class Run:
        summary: dict = {}

        def log(self, values: dict) -> None:
            pass

    fake = types.SimpleNamespace(
        init=lambda **kw: started.update(kw) or Run(),
        Table=lambda **kw: None,
        Image=lambda pixels: None,
        finish=lambda: None,
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    argv = ["isoflop", str(isoflop_sweep), *FAST, "--wandb", "--wandb-project", "p"]
    assert main([*argv, "--wandb-entity", "team"]) == 0
    assert (started["project"], started["entity"]) == ("p", "team")
    assert main(argv) == 0
    assert started["entity"] is None  # W&B's own default entity


def test_wandb_summary_says_which_laws_are_trusted(isoflop_sweep: Path, monkeypatch) -> None:
    logged: dict = {}

    class Run:
        summary = logged

        def log(self, values: dict) -> None:
            pass

    fake = types.SimpleNamespace(
        init=lambda **kw: Run(),
        Table=lambda **kw: None,
        Image=lambda pixels: None,
        finish=lambda: None,
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert main(["isoflop", str(isoflop_sweep), *FAST, "--wandb"]) == 0
    assert logged["isoflop/trusted"] is True and logged["isoflop/a"] == pytest.approx(0.5, abs=0.02)


def test_report_states_the_known_floor_beside_the_fitted_E(isoflop_report) -> None:
    # The fake runs record irreducible_loss = TRUTH["E"], as a synthetic language's runs do.
    _, text, document, _ = isoflop_report
    (chinchilla,) = [f for f in document["fits"] if f.get("law") == "chinchilla"]
    E = chinchilla["params"]["E"]
    section = text[text.index("## Chinchilla") :].split("\n## ")[0]
    assert f"The data records its irreducible loss: {TRUTH['E']:.4g} nats/token" in section
    assert f"E = {E:.4g}" in section and f"{E / TRUTH['E'] - 1:+.1%} from it" in section


def test_runs_of_other_data_are_refused_in_one_law_unless_asked(tmp_path: Path, capsys) -> None:
    """Issue 31: a ladder half on python_stdlib/bytes, half on text/bpe, was fitted as one law."""
    sizes = [1e5, 2e5, 4e5, 8e5, 1.6e6, 3.2e6]
    for k, n_params in enumerate(sizes):
        job = write_run(
            tmp_path / "runs" / str(k), run_id=f"r{k}", sweep_id="s", n_params=n_params, tokens=1e8
        )
        record = json.loads((job / "run.json").read_text())
        other = k % 2
        record |= {"tokenizer": "bpe:1a2b3c4d" if other else "bytes", "val_set": f"{other:016x}"}
        (job / "run.json").write_text(json.dumps(record))
    runs = str(tmp_path / "runs")
    assert main(["power", runs, "--bootstrap", "0"]) == 2
    error = capsys.readouterr().err
    assert (
        error.count("\n") == 1
        and "scaling-fit: error: the runs' losses are not one quantity" in error
    )
    assert "tokenizer (3 bpe:1a2b3c4d, 3 bytes); val_set (" in error and "--mix-data" in error
    assert main(["power", runs, "--bootstrap", "0", "--mix-data"]) == 0
    assert "losses of different kinds in one law (--mix-data): tokenizer" in capsys.readouterr().out
