from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scalinglab.analysis.load import (
    RUN_COLUMNS,
    budget_flops,
    budget_labels,
    completed,
    left_out_message,
    load_csv,
    load_curves,
    load_runs,
    load_wandb,
    load_wandb_curves,
    parse_overrides,
    seed_means,
)

from .fake_runs import BUDGETS, chinchilla_loss, write_run


def test_load_runs_schema_and_statuses(isoflop_sweep: Path) -> None:
    runs = load_runs(isoflop_sweep)
    assert len(runs) == 17
    assert runs["status"].value_counts().to_dict() == {
        "completed": 15,
        "failed": 1,
        "lost": 1,
    }  # no process holds it
    for column in [
        "n_params",
        "n_params_nonembedding",
        "tokens",
        "flops",
        "lr",
        "batch_size",
        "tokens_per_step",
        "seq_len",
        "val_loss",
        "best_val_loss",
        "train_loss",
        "wall_time_s",
        "irreducible_loss",
    ]:
        assert runs[column].dtype == np.float64, column
    assert runs["run_id"].is_unique
    assert set(runs["sweep_id"]) == {"isoflop"}
    assert all(Path(p, "run.json").exists() for p in runs["path"])
    row = runs.set_index("run_id").loc["iso00"]
    assert row["val_loss"] == pytest.approx(chinchilla_loss(row["n_params"], row["tokens"]))
    assert np.isnan(runs.set_index("run_id").loc["iso-running", "val_loss"])


def test_override_columns_are_parsed(isoflop_sweep: Path) -> None:
    runs = load_runs(isoflop_sweep).set_index("run_id")
    assert runs.loc["iso00", "model"] == "gpt_0"
    assert runs.loc["iso00", "optimizer.lr"] == 0.003
    assert runs.loc["iso14", "budget.flops"] == 1e17
    assert parse_overrides(["+a.b=3", "~c", "d=x=y", "e=2"]) == {"a.b": 3, "d": "x=y", "e": 2}


def test_overrides_fall_back_to_hydra_dir(tmp_path: Path, isoflop_sweep: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".hydra").mkdir()
    record = json.loads((isoflop_sweep / "0" / "run.json").read_text())
    del record["overrides"]
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / ".hydra" / "overrides.yaml").write_text("- model=gpt_small\n")
    assert load_runs(run_dir)["model"].tolist() == ["gpt_small"]


def test_every_config_key_is_a_column(tmp_path: Path, isoflop_sweep: Path) -> None:
    """`.hydra/config.yaml` flattened: any key can be filtered or grouped on, not only overrides;
    an override wins over the config, the record over both."""
    for name, n_layers, warmup in (("a", 2, 20), ("b", 4, 50)):
        run_dir = tmp_path / name
        (run_dir / ".hydra").mkdir(parents=True)
        record = json.loads((isoflop_sweep / "0" / "run.json").read_text())
        record |= {"run_id": name, "seed": 7, "overrides": ["optimizer.lr=0.01"]}
        record["model"] = {**record.get("model", {}), "n_layers": n_layers}  # as it was built
        (run_dir / "run.json").write_text(json.dumps(record))
        (run_dir / ".hydra" / "config.yaml").write_text(
            f"model:\n  n_layers: {n_layers}\n  d_model: 64\n"
            f"scheduler:\n  warmup_steps: {warmup}\n  _target_: scalinglab.schedules.Cosine\n"
            "optimizer:\n  lr: ${inverse_width_lr:3e-3,64,${model.d_model}}\n"
            "  betas: [0.9, 0.95]\nseed: 3\ndata:\n  path: ???\n"
        )
    runs = load_runs(tmp_path).set_index("run_id")
    assert runs["model.n_layers"].to_dict() == {"a": 2, "b": 4}
    assert runs.groupby("scheduler.warmup_steps").size().to_dict() == {20: 1, 50: 1}
    assert runs.loc["a", "scheduler._target_"] == "scalinglab.schedules.Cosine"
    assert runs.loc["a", "optimizer.betas"] == [0.9, 0.95]
    assert runs.loc["a", "data.path"] == "???"  # as Hydra saved it
    assert runs["optimizer.lr"].tolist() == [0.01, 0.01]  # the override, not the interpolation
    assert runs["seed"].tolist() == [7, 7]  # the record, not the config


def test_model_columns_are_the_built_shape(tmp_path: Path, isoflop_sweep: Path) -> None:
    """A shape left to the size rule (model.target_params, d_model null in the config) is the
    record's: the column said what the config said, 999 where width 32 was trained."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    record = json.loads((isoflop_sweep / "0" / "run.json").read_text())
    record["model"] = {**record.get("model", {}), "d_model": 32, "target_params": 2.5e4}
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / ".hydra" / "config.yaml").write_text(
        "model:\n  d_model: null\n  target_params: 25000.0\n"
    )
    runs = load_runs(run_dir)
    assert runs["model.d_model"].tolist() == [32]
    assert runs["model.target_params"].tolist() == [2.5e4]


def test_single_run_dir_and_several_paths(isoflop_sweep: Path) -> None:
    assert load_runs(isoflop_sweep / "3")["run_id"].tolist() == ["iso03"]
    # Overlapping paths count each run once.
    assert len(load_runs([isoflop_sweep, isoflop_sweep / "3"])) == 17


def test_completed_and_left_out_message(isoflop_sweep: Path) -> None:
    runs = load_runs(isoflop_sweep)
    assert len(completed(runs)) == 15
    assert left_out_message(runs) == "2 runs left out: 1 failed, 1 lost"
    assert left_out_message(completed(runs)) == ""


def test_seed_means_average_runs_that_differ_in_seed_alone(tmp_path: Path) -> None:
    # Two data orders at lr 3e-3 (one relaunched in a sweep of its own), one run at lr 1e-2.
    for job, (sweep, seed, lr, loss) in enumerate(
        [("a", 0, 3e-3, 2.0), ("b", 1, 3e-3, 2.2), ("a", 0, 1e-2, 2.5)]
    ):
        write_run(
            tmp_path / sweep / str(job),
            run_id=f"r{job}",
            sweep_id=sweep,
            n_params=1e5,
            tokens=2e6,
            lr=lr,
            loss=loss,
            seed=seed,
            overrides=[f"optimizer.lr={lr}", f"seed={seed}"],
        )
    runs = load_runs(tmp_path).rename(columns={"val_loss": "loss"})
    # As a W&B run's resolved config has them: its own directory, its sweep as the group.
    resolved = runs.assign(
        **{"paths.output_dir": runs["path"], "logger.wandb.group": runs["sweep_id"]}
    )
    for frame in (runs, resolved):
        means = seed_means(frame).sort_values("lr")
        assert means["lr"].tolist() == [3e-3, 1e-2]
        assert means["loss"].tolist() == pytest.approx([2.1, 2.5])
        assert means["n_seeds"].tolist() == [2, 1]
    # A table without seeds has no replicates, even where its rows look alike.
    table = runs.drop(columns="seed")
    assert seed_means(table)["n_seeds"].tolist() == [1, 1, 1]


def test_no_runs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"{tmp_path}: no runs found"):
        load_runs(tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        load_runs(tmp_path / "missing")


def test_load_curves(isoflop_sweep: Path) -> None:
    curves = load_curves(isoflop_sweep)
    assert {
        "run_id",
        "step",
        "tokens",
        "flops",
        "train/loss",
        "val/loss",
        "n_params",
        "status",
        "model",
    } <= set(curves.columns)
    first = curves[curves["run_id"] == "iso00"]
    assert first["step"].is_monotonic_increasing
    # Per-step tokens, not the run's final figure.
    assert first["tokens"].iloc[0] < first["tokens"].iloc[-1]
    assert first["val/loss"].isna().any() and first["val/loss"].notna().any()
    assert curves.groupby("run_id")["n_params"].nunique().eq(1).all()


def test_load_csv_maps_columns_and_computes_flops(points_csv: Path) -> None:
    points = load_csv(points_csv, {"n_params": "params", "tokens": "data", "loss": "Loss"})
    assert len(points) == 15
    assert np.allclose(points["flops"], 6 * points["n_params"] * points["tokens"])
    assert (points["status"] == "completed").all()
    with pytest.raises(ValueError, match="no column 'N' \\(for n_params\\)"):
        load_csv(points_csv, {"n_params": "N", "loss": "Loss"})
    with pytest.raises(ValueError, match="no loss column"):
        load_csv(points_csv, {"n_params": "params"})


def test_budget_labels_group_within_tolerance() -> None:
    flops = np.array([1e15, 1.03e15, 1e16, 0.98e16, 1.02e16])
    labels = budget_labels(flops)
    assert labels.tolist() == [0, 0, 1, 1, 1]
    budgets = budget_flops(flops, labels)
    assert budgets[0] == pytest.approx(np.sqrt(1e15 * 1.03e15))
    assert budgets[1] == pytest.approx((1e16 * 0.98e16 * 1.02e16) ** (1 / 3))
    assert budget_labels([b * 1.03 for b in BUDGETS] + BUDGETS).max() == 2
    # Runs a step of more than the tolerance apart are two budgets; 0 keeps every distinct value.
    assert budget_labels([1e15, 1.06e15]).tolist() == [0, 1]
    assert budget_labels([1e15, 1e15 * (1 + 1e-9)], rtol=0).tolist() == [0, 1]
    with pytest.raises(ValueError, match="positive, finite"):
        budget_labels([1e15, np.nan])


class FakeRun:
    """The few attributes of wandb.apis.public.Run that the loader reads."""

    def __init__(self, run_id: str, state: str, n_params: float, tokens: float) -> None:
        self.id, self.name, self.group, self.state = run_id, f"run-{run_id}", "sweep-a", state
        self.config = {
            "n_params": n_params,
            "tokens": tokens,
            "lr": 3e-3,
            "batch_size": 16,
            "overrides": ["model=gpt_x", "optimizer.lr=0.003"],
        }
        loss = chinchilla_loss(n_params, tokens)
        self.summary = {
            "val/loss": loss,
            "train/loss": loss + 0.01,
            "flops": 6 * n_params * tokens,
            "n_params_nonembedding": n_params - 1000,
        }
        self.scanned = False

    def scan_history(self, keys=None, page_size=1000):
        self.scanned = True
        return iter([{"_step": s, "tokens": s * 1e5, "train/loss": 3.0 / s} for s in (1, 2, 3)])

    def history(self, *args, **kwargs):
        raise AssertionError("history() samples points; the loader must use scan_history()")


class FakeApi:
    def __init__(self, runs: list[FakeRun]) -> None:
        self._runs, self.calls = runs, []

    def runs(self, path: str, filters: dict | None = None):
        self.calls.append((path, filters))
        return list(self._runs)


def fake_api() -> FakeApi:
    return FakeApi(
        [
            FakeRun("a", "finished", 1e6, 2e7),
            FakeRun("b", "crashed", 2e6, 4e7),
            FakeRun("c", "running", 4e6, 8e7),
        ]
    )


def test_load_wandb_matches_the_run_dir_schema(isoflop_sweep: Path) -> None:
    api = fake_api()
    runs = load_wandb("scaling", {"group": "sweep-a"}, entity="me", api=api)
    assert api.calls == [("me/scaling", {"group": "sweep-a"})]
    assert runs["status"].tolist() == ["completed", "failed", "running"]
    assert runs.loc[0, "val_loss"] == pytest.approx(chinchilla_loss(1e6, 2e7))
    assert runs.loc[0, "flops"] == pytest.approx(6 * 1e6 * 2e7)
    assert runs.loc[0, "optimizer.lr"] == 0.003 and runs.loc[0, "sweep_id"] == "sweep-a"
    local = load_runs(isoflop_sweep)
    assert (
        list(runs.columns[: len(RUN_COLUMNS)])
        == RUN_COLUMNS
        == list(local.columns[: len(RUN_COLUMNS)])
    )
    assert all(runs[c].dtype == local[c].dtype for c in ["n_params", "val_loss", "flops"])


def test_load_wandb_curves_uses_scan_history() -> None:
    api = fake_api()
    curves = load_wandb_curves("scaling", api=api)
    assert all(run.scanned for run in api._runs)
    assert len(curves) == 9
    assert curves["step"].tolist()[:3] == [1, 2, 3]
    assert {"n_params", "status", "train/loss", "tokens"} <= set(curves.columns)
    # The step's own tokens win over the run's final count.
    assert curves["tokens"].max() == pytest.approx(3e5)


def test_load_wandb_with_no_runs_is_an_error() -> None:
    with pytest.raises(ValueError, match="no W&B runs"):
        load_wandb("scaling", api=FakeApi([]))


def test_scaling_eval_figures_are_columns_by_data_name(tmp_path: Path) -> None:
    from .fake_runs import write_run

    scored, unscored = tmp_path / "a", tmp_path / "b"
    write_run(scored, run_id="a", sweep_id="s", n_params=1e6, tokens=1e7)
    write_run(unscored, run_id="b", sweep_id="s", n_params=2e6, tokens=1e7)
    record = json.loads((scored / "run.json").read_text())
    record["evals"] = {
        "wiki": {"val_loss": 3.5, "bits_per_byte": 1.25, "tokens": 4096},
        "code": {"val_loss": 2.5, "tokens": 2048},
    }
    (scored / "run.json").write_text(json.dumps(record))
    runs = load_runs(tmp_path).set_index("run_id")
    assert runs.loc["a", "eval/wiki/val_loss"] == 3.5 and runs.loc["a", "eval/code/tokens"] == 2048
    assert runs.loc["a", "eval/wiki/bits_per_byte"] == 1.25
    assert np.isnan(runs.loc["b", "eval/wiki/val_loss"])  # not scored there
    assert runs.loc["a", "val_loss"] == record["val_loss"]  # the run's own figures unchanged


def test_a_copied_run_is_counted_once(isoflop_sweep: Path, tmp_path: Path) -> None:
    """A run directory copied twice (one run_id) is one run, from the first path, and the
    copies are named."""
    first = next(p for p in sorted(isoflop_sweep.iterdir()) if (p / "run.json").exists())
    for copy in ("copy_a", "copy_b"):
        shutil.copytree(first, tmp_path / copy)
    with pytest.warns(UserWarning, match=r"is found 3 times: counted once, from .*left out: "):
        runs = load_runs([first, tmp_path])
    assert len(runs) == 1 and runs["path"][0] == str(first)


def test_a_table_with_repeated_rows_says_so(tmp_path: Path) -> None:
    table = tmp_path / "points.csv"
    table.write_text("n_params,loss\n1e6,3.0\n2e6,2.8\n1e6,3.0\n4e6,2.6\n1e6,3.0\n")
    with pytest.warns(UserWarning, match=r"2 rows repeat an earlier row exactly \(lines 4, 6\)"):
        points = load_csv(table)
    assert len(points) == 5  # fitted as given, and said


def test_a_record_whose_field_has_the_wrong_type_is_not_a_point(tmp_path: Path) -> None:
    """`n_params: true` was fitted as N = 1: the record's schema (records.RUN_FIELDS) types each
    field, and a record that breaks it reads as damaged, naming the field."""
    good = write_run(tmp_path / "good", run_id="g", sweep_id="s", n_params=1e6, tokens=1e8)
    bad = write_run(tmp_path / "bad", run_id="b", sweep_id="s", n_params=2e6, tokens=1e8)
    record = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps(record | {"n_params": True}))
    with pytest.warns(UserWarning, match=r"n_params is true, not a whole number"):
        runs = load_runs(tmp_path).set_index("run_id")
    assert completed(runs.reset_index())["path"].tolist() == [str(good)]
    assert json.loads((good / "run.json").read_text())["n_params"] == 1_000_000


def test_series_are_paired_by_index_or_refused() -> None:
    import pandas as pd

    from scalinglab.analysis.laws.power import fit_power_law

    x = pd.Series([1e5, 2e5, 4e5, 8e5, 1.6e6, 3.2e6])
    y = 3 + 10 * x**-0.3
    assert fit_power_law(x, y, n_bootstrap=0).params["alpha"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="x and y are Series with different indexes"):
        fit_power_law(x, y.sort_values(), n_bootstrap=0)
