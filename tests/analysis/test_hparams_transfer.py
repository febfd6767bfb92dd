"""Learning-rate transfer across widths (`scaling-fit transfer`), on synthetic sweeps whose optimum
at every width is known: fixed under mup, falling as 1/width under sp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalinglab.analysis.cli import main
from scalinglab.analysis.laws.transfer import grid_step, lr_transfer, plot_transfer

from .fake_runs import write_run

WIDTHS = [32, 64, 128, 256]
LRS = 1e-3 * 2.0 ** np.arange(-3, 8)  # a factor-2 grid, 1.25e-4 to 0.128
MUP_OPT = 1e-2


def known_optimum(parametrization: str, width: float) -> float:
    """mup: one optimum at every width; sp: 1/width from the same optimum at width 64."""
    return MUP_OPT if parametrization == "mup" else MUP_OPT * 64 / width


def transfer_sweep(seed: int = 0, noise: float = 0.001, parametrizations=("sp", "mup")):
    """(parametrization, width, lr, loss) per run: a bowl in log2 lr around the known optimum,
    lower for wider models, with multiplicative noise."""
    rng = np.random.default_rng(seed)
    rows = [
        (p, w, lr, 3.0 - 0.1 * np.log2(w) + 0.05 * np.log2(lr / known_optimum(p, w)) ** 2)
        for p in parametrizations
        for w in WIDTHS
        for lr in LRS
    ]
    p, w, lr, loss = (np.array(v) for v in zip(*rows, strict=True))
    return p, w.astype(float), lr, loss * np.exp(noise * rng.standard_normal(loss.size))


def test_mup_optimum_holds_and_sp_drifts() -> None:
    fit = lr_transfer(*transfer_sweep())
    assert fit.law == "transfer" and fit.trusted, fit.failed_checks
    assert grid_step(LRS) == pytest.approx(2.0)
    for cell in fit.extras["cells"]:
        truth = known_optimum(cell["parametrization"], cell["width"])
        lo, hi = cell["lr_band"]
        assert lo <= cell["lr_opt"] <= hi and lo / 2 <= truth <= hi * 2, cell
        assert cell["lr_opt"] == pytest.approx(truth, rel=0.5)
        assert fit.params[f"lr_opt[{cell['parametrization']}, {cell['width']:g}]"] == cell["lr_opt"]
    transfer = fit.extras["transfer"]
    assert transfer["mup"]["holds"] and transfer["mup"]["spread_steps"] <= 1
    # 8x in width moves the sp optimum 8x: three grid steps of 2x.
    assert not transfer["sp"]["holds"] and transfer["sp"]["spread_steps"] == pytest.approx(
        3, abs=0.5
    )
    assert fit.ci95 == {}  # the interval is the near-optimal band, not a bootstrap
    json.dumps(fit.to_dict())


def test_one_grid_step_apart_still_holds() -> None:
    p, w, lr, loss = transfer_sweep(parametrizations=("mup",))
    # The widest model's optimum moves up by one grid step: within the rule.
    shifted = w == 256
    loss = np.where(shifted, 3.0 - 0.8 + 0.05 * np.log2(lr / (2 * MUP_OPT)) ** 2, loss)
    fit = lr_transfer(p, w, lr, loss)
    assert fit.extras["transfer"]["mup"]["spread_steps"] == pytest.approx(1.0, abs=0.3)
    assert fit.extras["transfer"]["mup"]["holds"]
    # Two steps: it drifts.
    loss = np.where(shifted, 3.0 - 0.8 + 0.05 * np.log2(lr / (4 * MUP_OPT)) ** 2, loss)
    assert not lr_transfer(p, w, lr, loss).extras["transfer"]["mup"]["holds"]


def test_transfer_checks_design_and_centering() -> None:
    p, w, lr, loss = transfer_sweep(parametrizations=("mup",))
    narrow = np.isin(w, [32, 64])  # widths 2x apart cannot show transfer
    failed = {
        c["name"] for c in lr_transfer(p[narrow], w[narrow], lr[narrow], loss[narrow]).failed_checks
    }
    assert failed == {"design"}
    low = lr <= 1e-2  # the optimum at the grid's top edge
    fit = lr_transfer(p[low], w[low], lr[low], loss[low])
    assert {c["name"] for c in fit.failed_checks} == {"centering"}


def test_transfer_figure_has_a_panel_per_parametrization() -> None:
    fit = lr_transfer(*transfer_sweep())
    mup, sp = plot_transfer(fit).axes
    assert mup.get_title().startswith("mup: optimum holds")
    assert sp.get_title().startswith("sp: optimum drifts")
    assert len(sp.get_lines()) >= len(WIDTHS) and len(sp.containers) == len(WIDTHS)
    labels = [t.get_text() for t in mup.get_legend().get_texts()]
    assert labels == [f"d_model {w:g}" for w in sorted(WIDTHS)]


def write_sweep(root: Path) -> Path:
    """The sweep as run directories: sp runs carry no model.parametrization (the default)."""
    p, w, lr, loss = transfer_sweep()
    for k, (name, width, rate, value) in enumerate(zip(p, w, lr, loss, strict=True)):
        overrides = [f"model.d_model={int(width)}", f"optimizer.lr={rate:.6g}"]
        overrides += [f"model.parametrization={name}"] if name != "sp" else []
        write_run(
            root / str(k),
            run_id=f"tr{k:03d}",
            sweep_id="mup_transfer",
            n_params=1e6 * width / 32,
            tokens=1e7,
            lr=rate,
            loss=float(value),
            overrides=overrides,
            n_logged=2,
        )
    return root


def test_cli_transfer_from_runs_and_from_csv(tmp_path: Path, capsys) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    out = tmp_path / "transfer.json"
    assert main(["transfer", str(sweep), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mup: optimum holds across widths" in printed
    assert "sp: optimum DRIFTS across widths" in printed
    assert "band_lo" in printed and "band_hi" in printed
    fit = json.loads(out.read_text())
    assert fit["law"] == "transfer" and fit["trusted"]
    assert fit["params"]["lr_opt[sp, 256]"] == pytest.approx(known_optimum("sp", 256), rel=0.5)

    p, w, lr, loss = transfer_sweep()
    table = pd.DataFrame({"param": p, "d": w, "peak": lr, "final": loss})
    table.loc[table["param"] == "sp", "param"] = ""  # blank: sp
    table.to_csv(tmp_path / "grid.csv", index=False)
    argv = ["transfer", str(tmp_path / "grid.csv"), "--parametrization-col", "param"]
    argv += ["--width-col", "d", "--lr-col", "peak", "--loss-col", "final"]
    assert main([*argv, "--json", str(out)]) == 0
    from_csv = json.loads(out.read_text())
    assert from_csv["params"] == pytest.approx(fit["params"])


def test_cli_transfer_refuses_missing_and_non_positive_columns(tmp_path: Path, capsys) -> None:
    p, w, lr, loss = transfer_sweep()
    table = pd.DataFrame({"model.d_model": w, "optimizer.lr": lr, "loss": loss})
    table.drop(columns="optimizer.lr").to_csv(tmp_path / "no_lr.csv", index=False)
    assert main(["transfer", str(tmp_path / "no_lr.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "scaling-fit: error: transfer needs the columns optimizer.lr, which the data does not "
        "have (name them: --width-col, --lr-col, --loss-col)"
    )
    table.loc[4, "optimizer.lr"] = -1e-3
    table.to_csv(tmp_path / "negative.csv", index=False)
    assert main(["transfer", str(tmp_path / "negative.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "optimizer.lr must be positive" in err and "run 4" in err
