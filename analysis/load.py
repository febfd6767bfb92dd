"""Read run records (run directories, W&B, published tables) into tidy pandas frames.

Units everywhere: parameters and tokens are counts, FLOPs are floating-point operations
(6·N·D plus the attention term unless a table says otherwise), losses are nats per token,
learning rates are per step, wall time is seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

# Re-exported: `scalinglab.analysis.load.budget_labels` is where users have found them.
from scalinglab.analysis.budgets import BUDGET_RTOL, budget_flops, budget_labels  # noqa: F401
from scalinglab.records import (
    RUN_FIELDS,
    DamagedRecord,
    Status,
    View,
    fields_in,
    parse_overrides,
    read_record,
    seen_status,
)

# The run.json keys that become columns of `load_runs`, in order (scalinglab.records.RUN_FIELDS,
# View.RUN); overrides follow them.
RUN_COLUMNS = list(fields_in(View.RUN))
# Numbers as their RUN_FIELDS type says (the record's reader has checked them).
_NUMERIC_COLUMNS = [f.name for f in RUN_FIELDS if f.name in RUN_COLUMNS and f.type in (int, float)]

# W&B run states mapped onto run.json statuses; a `status` in the summary wins when present.
_WANDB_STATES = {"finished": "completed", "running": "running", "crashed": "failed"}
# Keys of a training run's W&B config beside its composed config (scalinglab.callbacks.wandb.wandb_config:
# the overrides, a flat key that run.json has and load_runs does not read; Lightning's log of the
# module's hyperparameters): not config columns, so that load_wandb has load_runs' columns.
_WANDB_NOT_CONFIG = {"overrides", "override", "flops_per_token_6n", "bytes_per_token"}


def _as_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, str | Path):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The fixed numeric columns as float64 (NaN where a run has no figure yet)."""
    for column in _NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def _record_row(
    record: Mapping[str, Any],
    overrides: Iterable[str],
    path: str,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    row = {column: record.get(column) for column in RUN_COLUMNS}
    row["objective"] = run_objective(record, config or {})
    row["path"] = path
    row |= eval_columns(record.get("evals") or {})
    # The model as it was built (run.json's), where the config may leave its shape to the size
    # rule (model.target_params, model.d_model null).
    model = record.get("model")
    for key, value in model.items() if isinstance(model, Mapping) else ():
        row[f"model.{key}"] = value
    # Overrides never shadow the record's own figures (e.g. `seed=1`): the record is the truth.
    for key, value in parse_overrides(overrides).items():
        row.setdefault(key, value)
    for key, value in flat_config(config or {}).items():  # the overrides' values win
        row.setdefault(key, value)
    return row


def run_objective(record: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """clm or mlm: the record's, else the composed config's data.objective (a W&B run's config),
    else clm (the only objective before there were two)."""
    data = config.get("data")
    from_config = data.get("objective") if isinstance(data, Mapping) else None
    return record.get("objective") or from_config or "clm"


def eval_columns(evals: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`scaling-eval`'s figures (run.json "evals": {data name: {val_loss, ...}}) as columns:
    {"eval/NAME/val_loss": ..., "eval/NAME/bits_per_byte": ..., "eval/NAME/tokens": ...}."""
    return {
        f"eval/{name}/{key}": value for name, fig in evals.items() for key, value in fig.items()
    }


def flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A composed config as dotted columns: {"model": {"n_layers": 2}} -> {"model.n_layers": 2}.
    Lists stay one value; an interpolation Hydra saved unresolved stays its `${...}` text."""
    return pd.json_normalize(dict(config), sep=".").iloc[0].to_dict() if config else {}


def _read_yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader) if path.exists() else None


def _read_run(run_json: Path) -> dict[str, Any]:
    """A run's row; raises DamagedRecord (the run is skipped) where run.json is not a record."""
    record = read_record(run_json)
    if record is None:  # gone since it was found
        raise DamagedRecord(f"{run_json}: unreadable (no such file)")
    status = seen_status(record, run_json.parent)  # `lost`: no live process holds the job
    record["status"] = status.value if isinstance(status, Status) else status  # frames hold str
    if record["status"] == Status.COMPLETED and not _positive(record.get("val_loss")):
        raise ValueError(
            f"{run_json}: a completed run whose val_loss is {record.get('val_loss')!r}, not a "
            "positive number (a damaged record: fix or delete it)"
        )
    hydra_dir = run_json.parent / ".hydra"
    overrides = record.get("overrides")
    if overrides is None:
        overrides = _read_yaml(hydra_dir / "overrides.yaml")
    config = _read_yaml(hydra_dir / "config.yaml")
    return _record_row(
        record, overrides or [], str(run_json.parent), config if isinstance(config, dict) else None
    )


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < np.inf


def load_runs(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per run found under `paths` (run directories or sweeps of any depth).

    Columns (see RUN_COLUMNS): run_id, sweep_id, name, status ("completed", "running",
    "failed", "diverged", "oom"); objective ("clm", next-token losses in nats/token, or "mlm",
    nats per masked token; records without one are clm); n_params, n_params_nonembedding (parameters);
    flops_per_token (FLOPs/token); tokens (tokens trained on); flops (training FLOPs);
    steps; lr (peak learning rate); batch_size (sequences/step per device); tokens_per_step
    (tokens/optimizer step, all devices); seq_len (tokens/sequence);
    val_loss (final), best_val_loss, train_loss (nats/token); wall_time_s (s);
    irreducible_loss (nats/token, synthetic data only); seed; path (the run directory);
    then `eval/NAME/val_loss`, `eval/NAME/bits_per_byte`, `eval/NAME/tokens` for each data set
    `scaling-eval` scored the run on (NAME: the data config's name),
    then one column per Hydra override (`optimizer.lr=0.003` -> column "optimizer.lr" =
    0.003, numbers parsed), then one per key of the run's composed config (`.hydra/config.yaml`,
    flattened: "model.n_layers", "scheduler.warmup_steps", ...; see flat_config), so any key can
    be filtered, grouped or plotted. The record wins over overrides, overrides over the config.
    The fixed numeric columns are float64, NaN where a run has no figure.
    Every status is kept; use `completed` to select the runs a fit should use.

    A run.json that cannot be read or is not a record is skipped with a warning. Raises
    ValueError when a path does not exist or holds no readable run.json, or when a completed
    run's val_loss is not a positive number.
    """
    rows, seen, damaged = [], set(), []
    if not _as_paths(paths):
        raise ValueError("load_runs needs run or sweep directories (or run.json files), got none")
    for root in _as_paths(paths):
        if not root.exists():
            raise ValueError(f"{root}: no such file or directory")
        run_files = [root] if root.is_file() else sorted(root.rglob("run.json"))
        if not run_files:
            raise ValueError(f"{root}: no runs found (no run.json below it)")
        for run_json in run_files:
            if run_json.resolve() in seen:
                continue
            seen.add(run_json.resolve())
            try:
                rows.append(_read_run(run_json))
            except DamagedRecord as error:
                damaged.append(str(error))
    if not rows:
        raise ValueError(
            f"no readable runs in {', '.join(map(str, _as_paths(paths)))}: {'; '.join(damaged)}"
        )
    for error in damaged:
        warnings.warn(f"skipping {error}", stacklevel=2)
    return _typed(pd.DataFrame(_once_each(rows)))


def _once_each(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with each run_id once (the first found, in path order): a run directory copied
    elsewhere is one run, and a fit must not count it twice. Each copy left out is named in a
    warning."""
    first: dict[Any, dict[str, Any]] = {}
    copies: dict[Any, list[str]] = {}
    for row in rows:
        run_id = row.get("run_id")
        if run_id is None or run_id not in first:
            first[run_id if run_id is not None else id(row)] = row
        else:
            copies.setdefault(run_id, []).append(str(row["path"]))
    for run_id, paths in copies.items():
        warnings.warn(
            f"run {run_id} is found {len(paths) + 1} times: counted once, from "
            f"{first[run_id]['path']}; left out: {', '.join(paths)}",
            stacklevel=3,
        )
    return list(first.values())


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with status "completed": the ones fits use."""
    return runs[runs["status"] == "completed"].reset_index(drop=True)


# Columns that name a run or hold what it measured, not what it was set to.
_NOT_SETTINGS = {
    *RUN_COLUMNS[:3],
    "status",
    "val_loss",
    "best_val_loss",
    "train_loss",
    "wall_time_s",
    "seed",
    "path",
    "loss",
}


def _is_setting(column: str) -> bool:
    """A column that says how a run was set up: not its identity, outcome, own directories or
    W&B group (resolved, as in a W&B run's config, paths differ per run and the group is the
    sweep id: a seed relaunched in a sweep of its own would stand apart)."""
    leaf = column.rsplit(".", 1)[-1]
    return (
        column not in _NOT_SETTINGS
        and not column.startswith("eval/")
        and not leaf.endswith(("dir", "dirpath", "path"))
        and leaf != "group"
    )


def settings(runs: pd.DataFrame) -> np.ndarray:
    """Each run's setting, numbered from 0 in order of first appearance: runs equal in every
    setting column (all but their identity, outcomes, directories and `seed`) share one, as
    replicates under other data orders. A frame without a `seed` column (a published table) has
    no replicates: every row is its own setting."""
    if "seed" not in runs:
        return np.arange(len(runs))
    keys = [c for c in runs.columns if _is_setting(c)]
    # Lists (betas, tags) are not hashable, and NaN must equal NaN within a setting.
    labels = runs[keys].map(repr).agg("\x1f".join, axis=1) if keys else pd.Series("", runs.index)
    return pd.factorize(labels)[0]


def seed_means(
    runs: pd.DataFrame, value: str = "loss", setting: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per setting (`setting`: settings(runs), unless the caller has them already; kept
    as a column): the first run's row, with `value` the mean over its replicates and `n_seeds`
    their count. The best loss over replicates would pick the luckiest data order, biased low by
    more the more seeds were run."""
    runs = runs.assign(setting=settings(runs) if setting is None else setting)
    groups = runs.groupby("setting", sort=False)[value]
    means = runs.assign(**{value: groups.transform("mean"), "n_seeds": groups.transform("size")})
    return means.drop_duplicates("setting").reset_index(drop=True)


def left_out_message(runs: pd.DataFrame) -> str:
    """What `completed` drops, e.g. "3 runs left out: 2 failed, 1 running"; "" if nothing."""
    left_out = runs.loc[runs["status"] != "completed", "status"].fillna("unknown")
    if left_out.empty:
        return ""
    counts = ", ".join(f"{n} {status}" for status, n in left_out.value_counts().items())
    plural = "run" if len(left_out) == 1 else "runs"
    return f"{len(left_out)} {plural} left out: {counts}"


def _join_runs(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-step rows with each run's columns joined; the step's own tokens/flops/lr win."""
    run_columns = [c for c in runs.columns if c == "run_id" or c not in metrics.columns]
    return metrics.merge(runs[run_columns], on="run_id", how="left")


def load_curves(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per (run, logged step): metrics.csv (step, tokens, flops, lr, train/loss,
    val/loss in nats/token, perf/tokens_per_sec, ...) with the `load_runs` columns joined
    by run_id. val/loss is NaN on steps without validation. Runs without metrics.csv are
    skipped; none at all raises ValueError."""
    runs = load_runs(paths)
    curves = []
    for run_id, run_dir in zip(runs["run_id"], runs["path"], strict=True):
        metrics_csv = Path(run_dir) / "metrics.csv"
        if metrics_csv.exists():
            curves.append(pd.read_csv(metrics_csv).assign(run_id=run_id))
    if not curves:
        raise ValueError(f"no metrics.csv in the runs under {', '.join(runs['path'])}")
    return _join_runs(pd.concat(curves, ignore_index=True), runs)


def _wandb_runs(project: str, filters: dict | None, entity: str | None, api: Any) -> list:
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    runs = list(api.runs(path, filters=filters or {}))
    if not runs:
        raise ValueError(f"no W&B runs in {path} matching {filters or {}}")
    return runs


def _wandb_row(run: Any) -> dict[str, Any]:
    config, summary = run.config, run.summary

    def first(*values: Any) -> Any:
        return next((v for v in values if v is not None), None)

    # The config first: the summary's `lr` is the last logged (scheduled) one, not the run's peak.
    record = {column: first(config.get(column), summary.get(column)) for column in RUN_COLUMNS}
    # Training writes the final figures to the summary at the end; a run still going (or one
    # that died) has only the last logged metrics.
    record |= {
        "run_id": run.id,
        "name": run.name,
        "sweep_id": first(config.get("sweep_id"), run.group),
        "status": first(summary.get("status"), _WANDB_STATES.get(run.state, "failed")),
        "val_loss": first(record["val_loss"], summary.get("val/loss")),
        "train_loss": first(record["train_loss"], summary.get("train/loss")),
    }
    composed = {k: v for k, v in config.items() if k not in _WANDB_NOT_CONFIG}
    return _record_row(record, config.get("overrides") or [], f"wandb:{run.id}", composed)


def load_wandb(
    project: str, filters: dict | None = None, *, entity: str | None = None, api: Any = None
) -> pd.DataFrame:
    """The `load_runs` frame from W&B runs (e.g. filters={"group": sweep_id} or
    {"tags": "ladder"}), with its columns for runs that scalinglab logged: the config columns
    come from the run's W&B config (the composed config, resolved: where `.hydra/config.yaml`
    keeps an interpolation's `${...}` text, W&B has its value), the override columns from its
    `overrides`; `eval/...` columns are run.json's alone. Each column is read from the config,
    then the summary (the final figures; the summary's lr is the last scheduled one); val_loss
    and train_loss fall back to the last logged `val/loss` and `train/loss`. The status is the
    summary's, else the W&B state
    (finished -> completed, running -> running, anything else -> failed). `api` defaults
    to `wandb.Api()`; tests pass a stand-in."""
    return _typed(
        pd.DataFrame([_wandb_row(run) for run in _wandb_runs(project, filters, entity, api)])
    )


def load_wandb_curves(
    project: str, filters: dict | None = None, *, entity: str | None = None, api: Any = None
) -> pd.DataFrame:
    """The `load_curves` frame from W&B. Reads every logged row with `run.scan_history()`:
    the sampled `run.history()` would drop points and bias the fits."""
    wandb_runs = _wandb_runs(project, filters, entity, api)
    runs = _typed(pd.DataFrame([_wandb_row(run) for run in wandb_runs]))
    curves = []
    for run in wandb_runs:
        history = pd.DataFrame(list(run.scan_history()))
        if "step" not in history and "_step" in history:
            history["step"] = history["_step"]
        curves.append(history.assign(run_id=run.id))
    return _join_runs(pd.concat(curves, ignore_index=True), runs)


def load_csv(path: str | Path, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Points from any table, e.g. published (N, D, loss) or (C, loss) results.

    `columns` maps the standard names n_params (parameters), tokens, flops (FLOPs),
    loss (nats/token), lr, batch_size to the file's own column names; unmapped standard
    names are looked for under their own name. Needs loss and n_params or flops; flops is
    computed as 6·N·D when absent and both N and D are present. Each row is a completed
    run (run_id = its row number). Raises ValueError naming the file and what is wrong: a missing
    column, no rows, a loss left blank, or a value of a standard column that is not a positive,
    finite number (blank N, D or C is allowed: the row is left out of fits that need it).
    """
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: an empty file (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a CSV table ({str(error).strip()})") from None
    header = str(table.columns[0]) if len(table.columns) == 1 else ""  # a table read whole
    if separator := next((s for s in ";\t|" if s in header), None):
        raise ValueError(
            f"{path}: one column, {header!r}: its columns are separated by {separator!r}; "
            "scaling-fit reads comma-separated tables"
        )
    if table.empty:
        raise ValueError(f"{path}: a header ({', '.join(table.columns)}) and no rows")
    columns = dict(columns or {})
    for standard, name in columns.items():
        if name not in table.columns:
            raise ValueError(
                f"{path}: no column {name!r} (for {standard}); it has {', '.join(table.columns)}"
            )
    points = table.rename(columns={name: standard for standard, name in columns.items()})
    if "loss" not in points:
        raise ValueError(
            f"{path}: no loss column (name it: --loss-col, or columns={{'loss': ...}})"
        )
    if "n_params" not in points and "flops" not in points:
        raise ValueError(f"{path}: needs an n_params or a flops column (or n_params and tokens)")
    for standard in ("loss", "n_params", "tokens", "flops", "lr", "batch_size"):
        if standard in points:
            points[standard] = _positive_column(
                points[standard], f"{path}: column {columns.get(standard, standard)!r}"
            )
    if "flops" not in points and {"n_params", "tokens"} <= set(points.columns):
        points["flops"] = 6.0 * points["n_params"] * points["tokens"]
    if points["loss"].isna().any():
        line = int(np.flatnonzero(points["loss"].isna())[0]) + 2
        raise ValueError(
            f"{path}: column {columns.get('loss', 'loss')!r} has no value (blank or NaN) on line {line}"
        )
    repeated = np.flatnonzero(table.duplicated().to_numpy()) + 2  # file lines, after the header
    if repeated.size:
        shown = ", ".join(map(str, repeated[:10])) + (", ..." if repeated.size > 10 else "")
        warnings.warn(
            f"{path}: {repeated.size} rows repeat an earlier row exactly (lines {shown}); each is "
            "fitted as a point of its own: drop them if they are one measurement",
            stacklevel=2,
        )
    points.insert(0, "run_id", [str(i) for i in range(len(points))])
    points.insert(1, "status", "completed")
    points["path"] = str(path)
    return points


def _positive_column(values: pd.Series, what: str) -> pd.Series:
    """A table's column as positive, finite floats (blank: NaN), or a ValueError naming the first
    bad line (the header is line 1)."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (values.notna() & ~(np.isfinite(numbers) & (numbers > 0))).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        value = values.iloc[first]
        value = value.item() if isinstance(value, np.generic) else value
        more = f" (and {bad.sum() - 1} more)" if bad.sum() > 1 else ""
        raise ValueError(
            f"{what} must hold positive, finite numbers; line {first + 2} has {value!r}{more}"
        )
    return numbers.astype("float64")
