"""`scaling-eval RUN_DIR data=...`: a trained run's checkpoint scored on other data, into its record."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from scalinglab.analysis import load_runs
from scalinglab.evaluate import main
from tests.conftest import TINY, foreign_checkpoint, run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained on data=synthetic by scaling-train (with its .hydra/ record)."""
    root = tmp_path_factory.mktemp("evaluated")
    result = run_cli(*TINY, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def evals(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text()).get("evals", {})


def test_own_data_gives_the_recorded_validation_loss_and_load_runs_has_columns(
    trained: Path,
) -> None:
    record = json.loads((trained / "run.json").read_text())
    assert main([str(trained)]) == 0  # the run's own data: the same loss as its validation
    figures = evals(trained)["synthetic"]
    assert figures["val_loss"] == pytest.approx(record["val_loss"], rel=1e-5)
    assert figures["step"] == 6 and figures["tokens"] == (2048 // 33) * 32
    assert figures["irreducible_loss"] == record["irreducible_loss"]
    assert "bits_per_byte" not in figures  # a synthetic language has no bytes
    # Another validation set of the same config: another loss, under its own name.
    assert main([str(trained), "data=synthetic", "data.val_tokens=4096", "--name", "more"]) == 0
    assert evals(trained)["more"]["tokens"] == (4096 // 33) * 32
    runs = load_runs(trained)
    assert runs["eval/synthetic/val_loss"][0] == figures["val_loss"]
    assert runs["eval/more/tokens"][0] == evals(trained)["more"]["tokens"]
    assert runs["val_loss"][0] == record["val_loss"]  # the record's own figures unchanged


def test_data_with_more_token_ids_or_another_tokenizer_is_refused_in_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = (trained / "run.json").read_text()
    corpus = tmp_path / "a.txt"
    corpus.write_text("text " * 5000)
    cases = [
        (["data=text", f"data.path={corpus}", "data.val_tokens=512"], "more than the run's"),
        (["data=synthetic_powerlaw", "data.vocab_size=128"], "is tokenized by"),
        (["model=gpt_tiny"], "data overrides only"),
    ]
    for overrides, message in cases:
        assert main([str(trained), *overrides]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("scaling-eval: error:") and message in err and "\n" not in err
    assert (trained / "run.json").read_text() == before


def test_another_runs_checkpoint_is_refused_in_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A checkpoint of another width, or of the same shape from another run, in the run's
    checkpoints/ is not scored: its loss would go into this run's record."""
    import torch

    record = json.loads((trained / "run.json").read_text())
    saved = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["run_id"] == record["run_id"]  # a run's checkpoints say whose they are
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "run.json").read_bytes()
    cases = [
        ({"d_model": 32}, "model.d_model=32 in the checkpoint, 64 in run.json"),
        ({}, f"run_id=other in the checkpoint, {record['run_id']} in run.json"),
    ]
    for shape, differs in cases:
        checkpoint = foreign_checkpoint(run, "other", **shape)
        assert main([str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"scaling-eval: error: {checkpoint} is not this run's: {differs}"
    assert (run / "run.json").read_bytes() == before


def test_a_bpe_tokenizer_trained_on_other_text_is_told_apart(tmp_path: Path) -> None:
    """Two BPE tokenizers of one size share a name and a vocabulary, not their ids: the data's
    record tells them apart, and scoring a run on the other's ids is refused."""
    from scalinglab.data.sources import TextDataModule
    from scalinglab.errors import ConfigError
    from scalinglab.evaluate import check_vocab

    def info(name: str, text: str) -> dict:
        (tmp_path / name).write_text(text * 400)
        data = TextDataModule(
            path=str(tmp_path / name), tokenizer="bpe", bpe_vocab_size=300, seq_len=16,
            batch_size=2, val_tokens=256, cache_dir=str(tmp_path / "cache"),
        )  # fmt: skip
        data.prepare_data()
        data.setup("fit")
        return data.metadata()

    run = info("a.txt", "the quick brown fox jumps over the lazy dog. ")
    same = info("a2.txt", "the quick brown fox jumps over the lazy dog. ")
    other = info("b.txt", "def main(argv):\n    return sum(map(int, argv))\n")
    assert run["tokenizer"] == other["tokenizer"] == "bpe"
    assert other["vocab_size"] <= run["vocab_size"]  # so only the tokenizer's digest can tell
    assert run["tokenizer_sha256"] == same["tokenizer_sha256"] != other["tokenizer_sha256"]
    check_vocab(same, run, run["vocab_size"], "text")  # the same tokenizer: accepted
    with pytest.raises(ConfigError, match="trained on other text"):
        check_vocab(other, run, run["vocab_size"], "text")


@pytest.mark.slow
def test_text_run_scored_on_a_second_corpus_in_bits_per_byte(tmp_path: Path) -> None:
    for name, text in (
        ("train.txt", "the quick brown fox. " * 3000),
        ("held.txt", "jumps! " * 3000),
    ):
        (tmp_path / name).write_text(text)
    data = [f"data.path={tmp_path / 'train.txt'}", "data.val_tokens=1024"]
    run_dir = tmp_path / "run"
    result = run_cli(*TINY[:7], "data=text", *data, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    held = ["data=text", f"data.path={tmp_path / 'held.txt'}", "data.val_tokens=1024"]
    assert main([str(run_dir), *held, "--name", "held_out"]) == 0
    figures = evals(run_dir)["held_out"]
    # Byte tokens: bits per byte is the loss in bits.
    assert figures["bits_per_byte"] == pytest.approx(figures["val_loss"] / math.log(2))
    assert load_runs(run_dir)["eval/held_out/bits_per_byte"][0] == figures["bits_per_byte"]


@pytest.fixture(scope="module")
def trained_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny objective=mlm run on text (bytes: the data knows its bytes per token) by
    scaling-train; its corpus lies beside it."""
    root = tmp_path_factory.mktemp("evaluated_mlm")
    (root / "train.txt").write_text("the quick brown fox jumps over the lazy dog. " * 400)
    text = ["data=text", f"data.path={root / 'train.txt'}", "data.val_tokens=2048"]
    result = run_cli(*TINY[:7], *text, "objective=mlm", f"hydra.run.dir={root / 'run'}", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_an_mlm_run_is_scored_by_the_masked_loss_on_the_validation_masks(
    trained_mlm: Path,
) -> None:
    """Its own data: the validation loss it recorded (the same deterministic masks), the masked
    positions counted, no bits per byte; data=NAME (composed without an objective): masked too."""
    from scalinglab.data.datamodule import MASK_FRACTION

    record = json.loads((trained_mlm / "run.json").read_text())
    assert record["objective"] == "mlm"
    masked_per_window = round(MASK_FRACTION * 32)
    assert main([str(trained_mlm)]) == 0
    figures = evals(trained_mlm)["text"]
    assert figures["val_loss"] == pytest.approx(record["val_loss"], rel=1e-5)
    assert figures["tokens"] == (2048 // 33) * masked_per_window
    assert "bits_per_byte" not in figures and "irreducible_loss" not in figures
    corpus = trained_mlm.parent / "train.txt"
    again = ["data=text", f"data.path={corpus}", "data.val_tokens=4096", "--name", "more"]
    assert main([str(trained_mlm), *again]) == 0
    more = evals(trained_mlm)["more"]
    assert more["tokens"] == (4096 // 33) * masked_per_window
    # The same text and masking recipe: near the recorded loss (a next-token loss read by a
    # bidirectional model, which sees the answer, would be far below it).
    assert abs(more["val_loss"] - record["val_loss"]) < 0.1


def test_an_objective_or_mask_token_other_than_the_runs_is_refused_in_one_line(
    trained_mlm: Path, trained: Path, capsys: pytest.CaptureFixture
) -> None:
    cases = [
        (trained_mlm, ["data.objective=clm"], "trained for mlm"),
        (trained, ["data.objective=mlm"], "trained for clm"),
    ]
    for run_dir, overrides, message in cases:
        before = (run_dir / "run.json").read_text()
        assert main([str(run_dir), *overrides]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("scaling-eval: error:") and message in err and "\n" not in err
        assert (run_dir / "run.json").read_text() == before
    # Data whose tokens the model reads but whose mask token is another id (fewer token ids).
    from scalinglab.errors import ConfigError
    from scalinglab.evaluate import check_vocab

    synthetic = {"vocab_size": 64, "tokenizer": None, "mask_token_id": 64}
    with pytest.raises(ConfigError, match="would mask with id 64, the run's mask token is 128"):
        check_vocab(synthetic, {"mask_token_id": 128}, 129, "synthetic")
    check_vocab(synthetic, {"mask_token_id": 64}, 65, "synthetic")
