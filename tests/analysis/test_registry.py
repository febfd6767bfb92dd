"""The registry: every law is found in its own module, and the command line is built from them
without loading any fitting, plotting or table library."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from scalinglab.analysis import registry
from scalinglab.analysis.result import FitResult


def test_every_law_is_found_once_in_its_own_module() -> None:
    laws = registry.laws()
    assert set(laws) == {
        "power", "chinchilla", "isoflop", "envelope", "hparams", "hparams_nd", "transfer",
        "batch",
    }  # fmt: skip
    for name, law in laws.items():
        assert law.name == name
        assert type(law).__module__.startswith("scalinglab.analysis.laws.")
    commands = [spec.name for spec, _ in registry.commands()]
    assert commands == [
        "power", "chinchilla", "isoflop", "envelope", "hparams", "transfer", "batch",
    ]  # fmt: skip
    approaches = {law.name: law.approach for law in laws.values() if law.approach}
    assert approaches == {"envelope": 1, "isoflop": 2, "chinchilla": 3}


def test_an_unknown_law_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="no law 'nope'; known laws: batch, chinchilla, envelope"):
        FitResult(law="nope", params={}).predict(1.0)


def test_the_command_line_loads_no_fitting_plotting_or_table_library() -> None:
    code = (
        "import sys\n"
        "from scalinglab.analysis.cli import build_parser\n"
        "build_parser().format_help()\n"
        "print(sorted(m for m in ('scipy', 'matplotlib', 'pandas', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("n_bootstrap", [-3, 2.5])
def test_every_fit_refuses_a_bootstrap_that_is_not_a_count(n_bootstrap) -> None:
    from scalinglab.analysis.laws.power import fit_power_law

    x = np.geomspace(1e4, 1e8, 8)
    with pytest.raises(ValueError, match="n_bootstrap must be a count, 0 or more"):
        fit_power_law(x, 2.0 + 40.0 * x**-0.3, n_bootstrap=n_bootstrap)


def test_scaling_fit_refuses_a_negative_bootstrap_in_one_line(tmp_path, capsys) -> None:
    from scalinglab.analysis.cli import main

    table = tmp_path / "points.csv"
    rows = [f"{n:g},{2.0 + 40.0 * n**-0.3:.6f}" for n in np.geomspace(1e4, 1e8, 8)]
    table.write_text("n,loss\n" + "\n".join(rows) + "\n")
    assert main(["power", "--csv", str(table), "--n-col", "n", "--bootstrap", "-5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["scaling-fit: error: n_bootstrap must be a count, 0 or more; got -5"]
