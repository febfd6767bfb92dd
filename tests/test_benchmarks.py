"""The throughput benchmark runs end to end on a CPU (its figures are for GPUs: benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_benchmark_prints_every_row(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    command = [
        sys.executable, "benchmarks/throughput.py", "--device", "cpu", "--shapes", "cpu-d64",
        "--variants", "plain,plain-loader,scalinglab,chunked", "--data", "shards,memory",
        "--threads", "1", "--warmup", "1", "--steps", "2", "--json", str(out),
    ]  # fmt: skip
    table = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = json.loads(out.read_text())
    assert [(r["variant"], r["data"]) for r in rows] == [
        ("plain", "device"),
        ("plain-loader", "device"),
        ("scalinglab", "shards"),
        ("scalinglab", "memory"),
        ("chunked", "device"),
    ]
    assert not any(r["error"] for r in rows)
    assert all(r["tokens_per_sec"] > 0 and r["step_ms"] > 0 and r["first_step_s"] > 0 for r in rows)
    # The chunked loss sees the plain loop's batches and computes the same loss.
    plain, chunked = rows[0], rows[4]
    assert abs(chunked["loss"] - plain["loss"]) < 1e-4
    # Memory-mapped shards and the same shards read into RAM give the job the same batches.
    assert rows[2]["loss"] == rows[3]["loss"]
    assert table.count("| cpu-d64 |") == 5 and "1.00x" in table
