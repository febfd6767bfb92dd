"""A job's W&B run, recorded offline by the project itself and read back from its transaction log:
the whole config, tags, tokens/FLOPs axes, the checkpoint artifact, and `load_wandb` on it.

wandb-core (0.31) writes no files/config.yaml or wandb-summary.json for an offline run: what a
synced run would hold is in the run's .wandb log, which these tests read record by record.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from scalinglab.analysis import load_runs, load_wandb
from tests.conftest import TINY, run_cli


def wandb_records(run_dir: Path) -> Iterator[Any]:
    """The protobuf `Record`s of an offline run's .wandb log: a 7-byte file header, then 32 KiB
    blocks of chunks, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle,
    4 last)."""
    from wandb.proto import wandb_internal_pb2

    raw = next(run_dir.glob("*.wandb")).read_bytes()
    pos, block, chunks = 7, 32768, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        chunks = (chunks if kind in (3, 4) else b"") + raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            yield record


def of_type(run_dir: Path, kind: str) -> list[Any]:
    return [getattr(r, kind) for r in wandb_records(run_dir) if r.WhichOneof("record_type") == kind]


def apply_updates(target: dict[str, Any], items: Any) -> dict[str, Any]:
    """Config or summary items (a key, or a nested key path, and a JSON value) applied in order."""
    for item in items:
        *parents, last = list(item.nested_key) or [item.key]
        node = target
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = json.loads(item.value_json)
    return target


class OfflineRun:
    """What `load_wandb` reads of a `wandb.apis.public.Run`, built from an offline run's log as the
    W&B server builds it from the same records once synced: the config without W&B's own `_wandb`
    key, the summary (each logged row's values, then training's own summary update), the state."""

    def __init__(self, run_dir: Path):
        run = of_type(run_dir, "run")[-1]
        self.id, self.name, self.group, self.tags = (
            run.run_id,
            run.display_name,
            run.run_group,
            list(run.tags),
        )
        config = apply_updates({}, run.config.update)
        for record in of_type(run_dir, "config"):
            apply_updates(config, record.update)
        self.config = {k: v for k, v in config.items() if k != "_wandb"}
        self.summary: dict[str, Any] = {}
        for record in of_type(run_dir, "summary"):
            apply_updates(self.summary, record.update)
        exits = of_type(run_dir, "exit")
        self.state = "finished" if exits and exits[-1].exit_code == 0 else "crashed"


class OfflineApi:
    """`wandb.Api()` over offline runs: `runs(path, filters)` with filters on the group."""

    def __init__(self, run_dirs: list[Path]):
        self._runs = [OfflineRun(d) for d in run_dirs]

    def runs(self, path: str, filters: dict | None = None) -> list[OfflineRun]:
        assert path == "scalinglab", path
        group = (filters or {}).get("group")
        return [r for r in self._runs if group is None or r.group == group]


@pytest.fixture(scope="module")
def wandb_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny job logged to W&B offline, with a checkpoint artifact and a tag."""
    root = tmp_path_factory.mktemp("wandb_job")
    run_dir = root / "run"
    args = [*TINY, "logger=wandb", "logger.wandb.log_model=true", "tags=[ladder]"]
    result = run_cli(*args, f"hydra.run.dir={run_dir}", "seed=3", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def offline_run_dir(run_dir: Path) -> Path:
    (found,) = (run_dir / "wandb").glob("offline-run-*")
    return found


def test_config_is_the_whole_resolved_config_with_scaling_keys_and_overrides(
    wandb_job: Path,
) -> None:
    config = OfflineRun(offline_run_dir(wandb_job)).config
    record = json.loads((wandb_job / "run.json").read_text())
    composed = OmegaConf.load(wandb_job / ".hydra" / "config.yaml")
    # Nested as composed, interpolations resolved (model.vocab_size, data.seed); the model node is
    # the config's with the shape as built over it (a shape left to the size rule is null there).
    for group in ("data", "optimizer", "scheduler", "trainer", "budget"):
        assert config[group] == OmegaConf.to_container(composed[group], resolve=True), group
    model = OmegaConf.to_container(composed.model, resolve=True)
    assert config["model"] == {**model, **record["model"]}
    assert config["model"]["_target_"] == "scalinglab.model.GPTConfig"
    assert config["data"]["seed"] == 3 and config["paths"]["output_dir"] == str(wandb_job)
    assert config["plan"]["steps"] == 6  # a resolver's value, where config.yaml has ${...}
    for key in ("n_params", "n_params_nonembedding", "flops_per_token", "tokens_per_step", "lr",
                "batch_size", "seq_len", "sweep_id", "run_id"):  # fmt: skip
        assert config[key] == record[key], key
    assert config["overrides"] == record["overrides"] and "data.batch_size=4" in config["overrides"]
    assert config["override"]["data.batch_size"] == 4 and config["override"]["model"] == "gpt_nano"
    assert config["override"]["tags"] == ["ladder"]


def test_tags_are_the_configured_ones_and_the_study_name(wandb_job: Path) -> None:
    assert OfflineRun(offline_run_dir(wandb_job)).tags == ["ladder", "scaling"]


def test_losses_are_plotted_against_tokens_and_every_row_has_tokens_and_flops(
    wandb_job: Path,
) -> None:
    run_dir = offline_run_dir(wandb_job)
    metrics = {m.name: m for m in of_type(run_dir, "metric") if m.name}
    assert {"tokens", "flops"} <= set(metrics)
    for name in ("train/loss", "val/loss", "perf/tokens_per_sec"):
        assert metrics[name].step_metric == "tokens", name
    rows = [{i.nested_key[0]: i.value_json for i in h.item} for h in of_type(run_dir, "history")]
    curves = [r for r in rows if "train/loss" in r or "val/loss" in r]
    assert sum("val/loss" in r for r in curves) == 2 and sum("train/loss" in r for r in curves) == 6
    assert all({"tokens", "flops"} <= set(r) for r in curves)


def test_log_model_uploads_the_final_checkpoint_with_its_checksum(wandb_job: Path) -> None:
    (artifact,) = of_type(offline_run_dir(wandb_job), "artifact")  # Lightning's own adds none
    run_id = json.loads((wandb_job / "run.json").read_text())["run_id"]
    assert (artifact.type, artifact.name) == ("model", f"model-{run_id}")
    assert set(artifact.aliases) == {"latest", "step-6"}
    entries = {e.path: e.digest for e in artifact.manifest.contents}
    assert set(entries) == {"last.ckpt", "last.ckpt.sha256"}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b or (isinstance(a, float) and a == pytest.approx(b, rel=1e-12))


def test_load_wandb_gives_load_runs_columns_and_values(wandb_job: Path) -> None:
    from_files = load_runs(wandb_job)
    api = OfflineApi([offline_run_dir(wandb_job)])
    from_wandb = load_wandb("scalinglab", {"group": from_files["sweep_id"][0]}, api=api)
    # The same columns; config columns in W&B's key order (Lightning logs `compile` first).
    assert sorted(from_wandb.columns) == sorted(from_files.columns)
    fixed = from_files.columns.get_loc("path") + 1
    assert list(from_wandb.columns[:fixed]) == list(from_files.columns[:fixed])
    assert from_wandb["status"][0] == "completed" and from_wandb["path"][0].startswith("wandb:")
    assert from_wandb["model.n_layers"][0] == 1 and from_wandb["data.batch_size"][0] == 4
    differ = {}
    for column in from_files.columns.drop("path"):
        ours, theirs = from_files[column][0], from_wandb[column][0]
        # .hydra/config.yaml keeps an interpolation's ${...} text; W&B has its value.
        if not same(ours, theirs) and not (isinstance(ours, str) and "${" in ours):
            differ[column] = (ours, theirs)
    assert not differ


@pytest.mark.slow  # 14 s on 2 shared cores: the report's fits and a W&B run
def test_analysis_run_holds_the_report_as_an_artifact(tmp_path: Path) -> None:
    from scalinglab.analysis.cli import main
    from tests.analysis.fake_runs import BUDGETS, SIZE_FACTORS, optimal_n_params, write_run

    sweep = tmp_path / "sweep"
    for job, (budget, factor) in enumerate((b, f) for b in BUDGETS for f in SIZE_FACTORS):
        n_params = optimal_n_params(budget) * factor
        write_run(sweep / str(job), run_id=f"r{job}", sweep_id="iso", n_params=n_params,
                  tokens=budget / (6 * n_params))  # fmt: skip
    out = tmp_path / "report" / "report.md"
    assert main(["report", str(sweep), "--out", str(out), "--bootstrap", "8", "--wandb"]) == 0
    runs = list(tmp_path.rglob("offline-run-*"))  # under WANDB_DIR (conftest)
    assert len(runs) == 1, sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))[:50]
    run_dir = runs[0]
    # Besides the tables' own (type run_table), one artifact: the report.
    kinds = [r.WhichOneof("record_type") for r in wandb_records(run_dir)]
    found = [a for a in of_type(run_dir, "artifact") if a.type != "run_table"]
    assert len(found) == 1, (kinds, [(a.type, a.name) for a in of_type(run_dir, "artifact")])
    (artifact,) = found
    assert (artifact.type, artifact.name) == ("analysis-report", "report-iso")
    written = {p.name for p in out.parent.iterdir()}
    assert {"report.md", "report.json"} < written and any(n.endswith(".png") for n in written)
    assert {e.path for e in artifact.manifest.contents} == written
