"""The fitted_law resolver (conf/hparams/fitted.yaml) reads the form its rules file holds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from scalinglab.errors import ConfigError
from scalinglab.rules import fitted_law

ND_RULES = {
    "form": "nd",
    "lr": {"coefficient": 2.0, "exponent_n": -0.5, "exponent_d": 0.2},
    "batch_tokens": {"coefficient": 0.5, "exponent_n": 0.0, "exponent_d": 0.5},
    "fitted_range": {"n_params": [1e5, 1e7], "tokens": [1e6, 1e9]},
}


def write(tmp_path: Path, rules: dict) -> str:
    """A rules file of its own name: the reader caches by path and modification time."""
    path = tmp_path / f"rules{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(rules))
    return str(path)


def test_nd_form_is_a_law_of_n_and_d_and_warns_outside_its_range(tmp_path, caplog) -> None:
    rules = write(tmp_path, ND_RULES)
    with caplog.at_level(logging.WARNING):
        # C (first) is ignored by an nd file: the law reads N and D.
        assert fitted_law(rules, "lr", 1e30, 1e6, 1e8) == pytest.approx(2.0 * 1e6**-0.5 * 1e8**0.2)
        assert fitted_law(rules, "batch_tokens", None, 1e6, 1e8) == pytest.approx(0.5 * 1e4)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        fitted_law(rules, "lr", None, 1e8, 1e8)
    (record,) = caplog.records
    assert "n_params=1e+08 is outside the range it was fitted on" in record.getMessage()
    assert "extrapolation" in record.getMessage()
    with pytest.raises(ConfigError, match="function of the compute budget"):
        fitted_law(rules, "lr", None, 1e6, None)  # no budget, no D


def test_compute_form_and_files_without_a_form_read_c(tmp_path) -> None:
    law = {"lr": {"coefficient": 2.0, "exponent": -0.2}, "fitted_range": [1e13, 1e15]}
    for rules in (law, {"form": "compute", **law}):
        assert fitted_law(write(tmp_path, rules), "lr", 1e14, 1e6, 1e8) == pytest.approx(
            2.0 * 1e14**-0.2
        )
    with pytest.raises(ConfigError, match="unknown form 'nk'"):
        fitted_law(write(tmp_path, {"form": "nk", **law}), "lr", 1e14, 1e6, 1e8)
