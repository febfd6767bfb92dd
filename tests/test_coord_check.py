"""scaling-coord-check on the CPU: flat in width under muP, logits growing under sp; flat in depth
under CompleteP.

The bound: over a 4x range of width (or depth), "flat" is a spread (largest / smallest rms at the
last step) under 2 = sqrt(4), a log-log slope under 1/2, and "growing" a ratio above 2. An update
whose size scales with width (sp's hidden matrices under Adam: O(lr) per entry, so O(lr x width)
per coordinate of their output) moves by 4x over the range; a muP layer by O(1).
Measured (seed 0, lr 1e-2, 5 steps, widths 64..256): mup spreads 1.5 (blocks) and 1.2 (logits),
sp grows 2.7x (logits) and 38x (last block); at 8 layers against 2, completep's last block moves
1.1x and mup's 4x.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalinglab.coord_check import coord_check, main

WIDTHS = [64, 128, 256]
FLAT = 2.0


def last_step(rows: list[dict], parametrization: str, layer: str) -> dict[tuple[int, int], float]:
    """{(width, depth): rms} at the last step."""
    last = max(r["step"] for r in rows)
    return {
        (r["width"], r["depth"]): r["rms"]
        for r in rows
        if (r["parametrization"], r["layer"], r["step"]) == (parametrization, layer, last)
    }


def spread(values: dict) -> float:
    return max(values.values()) / min(values.values())


@pytest.fixture(scope="module")
def width_rows() -> list[dict]:
    return coord_check(["sp", "mup"], WIDTHS, [2], steps=5, lr=1e-2)


@pytest.mark.parametrize("layer", ["block_0", "block_1", "logits"])
def test_mup_is_flat_in_width(width_rows: list[dict], layer: str) -> None:
    assert spread(last_step(width_rows, "mup", layer)) < FLAT


def test_sp_logits_and_hidden_states_grow_with_width(width_rows: list[dict]) -> None:
    for layer, factor in (("logits", FLAT), ("block_1", FLAT**3)):
        rms = last_step(width_rows, "sp", layer)
        assert rms[(256, 2)] / rms[(64, 2)] > factor, (layer, rms)


def test_completep_is_flat_in_depth_where_mup_is_not() -> None:
    rows = coord_check(["mup", "completep"], [64], [2, 8], steps=5, lr=1e-2)

    def last_block(parametrization: str) -> float:
        shallow = last_step(rows, parametrization, "block_1")[(64, 2)]
        return last_step(rows, parametrization, "block_7")[(64, 8)] / shallow

    assert 1 / FLAT < last_block("completep") < FLAT
    assert last_block("mup") > FLAT


def test_cli_writes_rows_and_a_figure(tmp_path: Path) -> None:
    argv = ["--widths", "32,64", "--steps", "1", "--parametrizations", "sp,mup"]
    main([*argv, "--json", str(tmp_path / "rows.json"), "--plot", str(tmp_path / "coord.png")])
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert set(rows[0]) == {"parametrization", "width", "depth", "step", "layer", "rms"}
    assert {r["layer"] for r in rows} == {"embedding", "block_0", "block_1", "logits"}
    assert len(rows) == 2 * 2 * 2 * 4  # parametrizations x widths x steps 0..1 x layers
    assert (tmp_path / "coord.png").read_bytes()[:4] == b"\x89PNG"
