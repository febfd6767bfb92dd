"""WSD decay branches: one trunk per size, a decay branch per token count, each a run of its own."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from scalinglab.analysis import load_runs
from scalinglab.errors import ConfigError
from scalinglab.export import load_model
from scalinglab.model import GPTConfig
from scalinglab.train import train
from tests.conftest import TINY, budgeted, compose_train, run_cli

WSD = [
    *budgeted(TINY),
    "scheduler=wsd",
    "scheduler.warmup_steps=2",
    "scheduler.decay_fraction=0.25",
]
TOKENS_PER_STEP = 4 * 32  # TINY's batch_size x seq_len


def curve(run_dir: Path) -> list[tuple[int, float]]:
    with (run_dir / "metrics.csv").open() as f:
        return [
            (int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r["train/loss"]
        ]


def test_a_branch_ends_where_a_straight_run_does(tmp_path: Path) -> None:
    short, long = 12 * TOKENS_PER_STEP, 20 * TOKENS_PER_STEP
    trunk = train(
        compose_train(*WSD, f"wsd_branches=[{short},{long}]", output_dir=tmp_path / "branched")
    )
    straight = train(
        compose_train(*WSD, f"budget.tokens={short}", output_dir=tmp_path / "straight")
    )

    branch_dir = tmp_path / "branched" / "branches" / f"tokens={short:g}"
    branch = json.loads((branch_dir / "run.json").read_text())
    assert trunk["status"] == branch["status"] == "completed"
    assert (trunk["steps"], branch["steps"], straight["steps"]) == (20, 12, 12)
    # The branch point is where the 12-step schedule leaves its flat phase: 2 + floor(0.75 x 10).
    assert branch["init_from"].endswith("branch-step9.ckpt")
    assert branch["flops_shared"] == 9 * TOKENS_PER_STEP * branch["flops_per_token"]
    # Same data, weights, optimizer state and learning rates: the same run, step for step.
    branched, straight_curve = curve(branch_dir), curve(tmp_path / "straight")
    assert (
        [step for step, _ in branched] == [step for step, _ in straight_curve] == list(range(1, 13))
    )
    assert [loss for _, loss in branched] == pytest.approx(
        [loss for _, loss in straight_curve], abs=1e-5
    )
    assert branch["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-5)
    assert branch["run_id"] != trunk["run_id"]
    # The branch started from its trunk's checkpoint; its own checkpoints are the branch's, so it
    # loads (and scores, and exports) as its own run.
    for run_dir in (tmp_path / "branched", branch_dir):
        assert load_model(run_dir).cfg.to_dict() == GPTConfig(**branch["model"]).to_dict()
    # Each job's composed config lies beside its record, though Hydra started neither: the run
    # frame has every config key, and each branch its own budget.
    frame = load_runs(tmp_path / "branched").set_index("steps")
    assert frame.loc[[12, 20], "budget.tokens"].tolist() == [short, long]
    assert frame.loc[[12, 20], "model.n_layers"].notna().all()

    # Run again: the trunk and its branch are both complete, nothing is retrained.
    again = train(
        compose_train(*WSD, f"wsd_branches=[{short},{long}]", output_dir=tmp_path / "branched")
    )
    assert again["attempts"] == 1
    assert json.loads((branch_dir / "run.json").read_text())["attempts"] == 1


def test_branches_in_a_sweep_are_rows_of_its_summary(tmp_path: Path) -> None:
    tokens = ",".join(str(n * TOKENS_PER_STEP) for n in (8, 12, 16))
    result = run_cli(
        "-m", *WSD, f"wsd_branches=[{tokens}]", "model.d_model=64,128", f"paths.output_root={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WSD branches:" in result.stdout + result.stderr  # the compute saved, reported
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    rows = json.loads((sweep_dir / "summary.json").read_text())
    assert len(rows) == 2 * 3 and all(r["status"] == "completed" for r in rows)
    assert sorted(r["steps"] for r in rows) == [8, 8, 12, 12, 16, 16]
    assert sum(1 for r in rows if r["flops_shared"]) == 4


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["wsd_branches=[1024,2048]"], "wsd_branches needs scheduler=wsd"),
        (["scheduler=wsd", "wsd_branches=[1024,2048]", "budget.tokens=4096"], "leave budget"),
    ],
)
def test_bad_branch_settings_are_refused(
    overrides: list[str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        train(compose_train(*TINY, *overrides, output_dir=tmp_path))
