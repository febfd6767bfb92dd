"""The data package: sources, shards, tokenizers, the cache, the batch stream and bad input."""

from __future__ import annotations

import json
import multiprocessing
import pickle
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scalinglab.data import (
    PythonStdlibDataModule,
    ShardsDataModule,
    SyntheticDataModule,
    TextDataModule,
    TokenDataModule,
    read_shard,
    write_shard,
)
from scalinglab.data.datamodule import TokenSequence, TrainBatches
from scalinglab.data.shards import HEADER_INTS, SHARD_MAGIC
from scalinglab.data.tokenizer import MAX_BPE_TOKEN_BYTES, BPETokenizer
from scalinglab.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "data"
METADATA_KEYS = {
    "name",
    "fingerprint",
    "tokenizer",
    "vocab_size",
    "n_train_tokens",
    "n_val_tokens",
    "bytes_per_token",
    "irreducible_loss",
}
SMALL = {"batch_size": 4, "seq_len": 16, "val_tokens": 256}


def write_text_corpus(directory: Path, n_files: int = 12, lines_per_file: int = 150) -> Path:
    """Lines of made-up words, deterministic, about 5 KB per file."""
    rng = np.random.default_rng(0)
    letters = np.array(list("etaoinshrdlucmfw"))
    words = ["".join(rng.choice(letters, size=rng.integers(2, 8))) for _ in range(300)]
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        lines = [" ".join(rng.choice(words, size=6)) + "." for _ in range(lines_per_file)]
        (directory / f"doc_{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return directory


def shard_corpus(directory: Path, sizes: tuple[int, ...] = (20_000, 15_000, 10_000)) -> Path:
    """Shards whose tokens are their positions in the concatenated corpus, so any window can be
    traced back to where it was read from."""
    directory.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, size in enumerate(sizes):
        write_shard(directory / f"part_{i:03d}.bin", np.arange(start, start + size))
        start += size
    return directory


def check_batches(dm: TokenDataModule, batch_size: int, seq_len: int) -> None:
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (batch_size, seq_len)
    assert x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()  # or a pinned batch copies synchronously
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.min()) >= 0 and int(max(x.max(), y.max())) < dm.vocab_size
    val_x, val_y = next(iter(dm.val_dataloader()))
    assert val_x.shape[1] == seq_len and torch.equal(val_x[:, 1:], val_y[:, :-1])
    metadata = dm.metadata()
    assert metadata.keys() >= METADATA_KEYS
    json.dumps(metadata)


# --- shards ---------------------------------------------------------------------------------------


def test_shard_round_trip(tmp_path):
    tokens = np.array([0, 1, 255, 256, 50256, 65535], dtype=np.int64)
    write_shard(tmp_path / "a.bin", tokens)
    header = np.fromfile(tmp_path / "a.bin", dtype="<i4", count=HEADER_INTS)
    assert list(header[:3]) == [SHARD_MAGIC, 1, len(tokens)] and not header[3:].any()
    read = read_shard(tmp_path / "a.bin")
    assert isinstance(read, np.memmap) and read.dtype == np.uint16
    np.testing.assert_array_equal(read, tokens)


def bad_shard(path: Path, fault: str) -> Path:
    write_shard(path, np.arange(100))
    raw = bytearray(path.read_bytes())
    if fault == "magic":
        raw[0:4] = (12345).to_bytes(4, "little")
    elif fault == "version":
        raw[4:8] = (7).to_bytes(4, "little")
    elif fault == "truncated":
        raw = raw[:-10]
    elif fault == "header":
        raw = raw[:100]
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    "fault, message",
    [("magic", "magic"), ("version", "version"), ("truncated", "truncated"), ("header", "header")],
)
def test_bad_shard_is_a_config_error(tmp_path, fault, message):
    shard_corpus(tmp_path / "shards")
    path = bad_shard(tmp_path / "shards" / "part_001.bin", fault)
    with pytest.raises(ConfigError, match=message) as error:
        read_shard(path)
    assert str(path) in str(error.value)
    dm = ShardsDataModule(path=str(tmp_path / "shards"), vocab_size=65536, **SMALL)
    with pytest.raises(ConfigError, match="part_001.bin"):
        dm.setup("fit")


def test_shards_read_as_one_sequence(tmp_path):
    directory = shard_corpus(tmp_path / "shards")
    expected = np.arange(45_000)
    for path in [directory, directory / "part_*.bin"]:
        dm = ShardsDataModule(path=str(path), vocab_size=65536, **SMALL)
        dm.setup("fit")
        check_batches(dm, 4, 16)
        assert dm.metadata()["n_shards"] == 3
        np.testing.assert_array_equal(dm.train_split.read(0, 45_000 - 256), expected[:-256])
        np.testing.assert_array_equal(dm.val_split.read(0, 256), expected[-256:])
    # A window across the boundary between shards 0 and 1 reads from both.
    sequence = TokenSequence([read_shard(f) for f in sorted(directory.glob("*.bin"))])
    np.testing.assert_array_equal(sequence.read(19_990, 30), np.arange(19_990, 20_020))


@pytest.mark.parametrize("offset", [0, 3])
def test_windows_inside_and_across_parts(offset: int) -> None:
    """A batch gathers the windows inside a part at once and reads those across parts one by one:
    the same tokens either way, for windows that end at a part's last token or one past it."""
    sizes = [50, 7, 300, 1, 123]
    tokens = np.arange(sum(sizes))
    parts = np.split(tokens.astype(np.uint16), np.cumsum(sizes)[:-1])
    sequence = TokenSequence(parts).span(offset, len(tokens))
    for seq_len in range(1, 40):
        window = seq_len + 1
        indices = np.random.default_rng(seq_len).permutation(len(sequence) // window)
        x, y = sequence.windows(indices, seq_len)
        starts = offset + indices * window
        np.testing.assert_array_equal(x.numpy(), starts[:, None] + np.arange(seq_len))
        np.testing.assert_array_equal(y.numpy(), starts[:, None] + np.arange(1, window))


def test_shards_pickle_as_file_names(tmp_path):
    directory = shard_corpus(tmp_path / "shards")
    sequence = TokenSequence([read_shard(f) for f in sorted(directory.glob("*.bin"))])
    pickled = pickle.dumps(sequence.span(100, 40_000))
    assert len(pickled) < 2000  # not 45_000 tokens
    copy = pickle.loads(pickled)
    assert all(isinstance(part, np.memmap) for part in copy.parts)
    np.testing.assert_array_equal(copy.read(19_000, 2000), np.arange(19_100, 21_100))


def test_shards_vocab_size_comes_from_config_meta_or_tokenizer(tmp_path):
    directory = tmp_path / "shards"
    directory.mkdir()
    write_shard(directory / "a.bin", np.arange(5000) % 200)
    assert (
        _setup(ShardsDataModule(path=str(directory), tokenizer="bytes", **SMALL)).vocab_size == 256
    )
    assert _setup(ShardsDataModule(path=str(directory), **SMALL)).vocab_size == 50257  # gpt2
    (directory / "meta.json").write_text(json.dumps({"vocab_size": 300, "bytes_per_token": 2.5}))
    dm = _setup(ShardsDataModule(path=str(directory), **SMALL))
    assert dm.vocab_size == 300 and dm.metadata()["bytes_per_token"] == 2.5
    assert _setup(ShardsDataModule(path=str(directory), vocab_size=512, **SMALL)).vocab_size == 512
    with pytest.raises(ConfigError, match="vocab_size 100"):
        _setup(ShardsDataModule(path=str(directory), vocab_size=100, **SMALL))


def _setup(dm: TokenDataModule) -> TokenDataModule:
    dm.setup("fit")
    return dm


# --- sources --------------------------------------------------------------------------------------


def test_python_stdlib_source(tmp_path):
    dm = PythonStdlibDataModule(max_bytes=300_000, cache_dir=str(tmp_path), **SMALL)
    dm.prepare_data()
    dm.setup("fit")
    check_batches(dm, 4, 16)
    metadata = dm.metadata()
    assert metadata["vocab_size"] == 256 and metadata["bytes_per_token"] == 1.0
    assert metadata["n_train_tokens"] + metadata["n_val_tokens"] >= 300_000
    assert len(metadata["fingerprint"]) == 64
    # The stdlib is real Python source.
    assert b"def " in bytes(dm.train_split.read(0, 100_000).astype(np.uint8))
    again = _setup(PythonStdlibDataModule(max_bytes=300_000, cache_dir=str(tmp_path), **SMALL))
    assert again.metadata()["fingerprint"] == metadata["fingerprint"]


def test_python_stdlib_is_pinned_whatever_python_runs():
    """The default corpus is CPython 3.11.7's library from the package, not this interpreter's:
    these are the bytes the README's demo was measured on (sha256 over the 692 files' contents,
    computed from the interpreter's own files when the archive was made)."""
    dm = PythonStdlibDataModule(**SMALL)
    assert dm.fingerprint == "5b141d42633dab6c80c1013a728c0c90906144c342470fd5a503ce59e0bddb17"
    assert len(dm._documents) == 692 and sum(map(len, dm._documents)) == 8_069_925
    assert dm._documents[0].startswith(b'"""Record of phased-in incompatible language changes.')
    with pytest.raises(ConfigError, match="holds only 8069925 bytes"):
        PythonStdlibDataModule(max_bytes=9_000_000, **SMALL)


@pytest.mark.parametrize("pattern", ["", "doc_0*.txt", "doc_00.txt"])
def test_text_source(tmp_path, pattern):
    """A directory, a glob or a file; the last val_tokens bytes of the last file are validation."""
    directory = write_text_corpus(tmp_path / "corpus")
    files = sorted(directory.glob(pattern or "*"))
    dm = _setup(
        TextDataModule(path=str(directory / pattern), cache_dir=str(tmp_path / "c"), **SMALL)
    )
    check_batches(dm, 4, 16)
    metadata = dm.metadata()
    assert metadata["n_documents"] == len(files)
    assert metadata["n_train_tokens"] + metadata["n_val_tokens"] == sum(
        f.stat().st_size for f in files
    )
    tail = np.frombuffer(files[-1].read_bytes()[-256:], dtype=np.uint8)
    np.testing.assert_array_equal(dm.val_split.read(0, 256), tail)


def test_synthetic_source():
    dm = _setup(SyntheticDataModule(vocab_size=32, n_next=4, n_train_tokens=20_000, **SMALL))
    check_batches(dm, 4, 16)
    metadata = dm.metadata()
    assert metadata["vocab_size"] == 32
    assert metadata["irreducible_loss"] == metadata["entropy_rate"]
    assert 0 < metadata["irreducible_loss"] < np.log(4)
    other_seed = _setup(
        SyntheticDataModule(vocab_size=32, n_next=4, n_train_tokens=20_000, seed=9, **SMALL)
    )
    assert (
        other_seed.metadata()["fingerprint"] == metadata["fingerprint"]
    )  # language is not the stream


def test_synthetic_irreducible_loss_matches_empirical_estimates():
    """The recorded irreducible loss against (a) the empirical conditional entropy of next token
    given current token, counted within the training windows, and (b) the loss the true chain
    itself scores on the validation batches, first target of each window included. With about
    4M training pairs over 64*4 transitions the plug-in estimate's bias (~ cells / 2N) and noise
    are far below the 0.01 nats tolerance; the validation estimate (65k targets, per-token
    loss spread under 1 nat) has standard error about 0.004, tolerance 0.02."""
    dm = _setup(SyntheticDataModule(vocab_size=64, n_next=4, n_train_tokens=4_000_000, seq_len=128))
    irreducible = dm.metadata()["irreducible_loss"]
    window = dm.seq_len + 1
    train = dm.train_split.read(0, len(dm.train_split) // window * window).reshape(-1, window)
    counts = np.zeros((64, 64))
    np.add.at(counts, (train[:, :-1].ravel(), train[:, 1:].ravel()), 1)
    joint = counts / counts.sum()
    conditional = counts / counts.sum(axis=1, keepdims=True)
    empirical = -np.sum(joint[counts > 0] * np.log(conditional[counts > 0]))
    assert abs(empirical - irreducible) < 0.01

    log_transition = np.log(np.maximum(dm.chain.transition_matrix(), 1e-300))
    val = [(x.numpy(), y.numpy()) for x, y in dm.val_dataloader()]
    losses = np.concatenate([-log_transition[x, y].ravel() for x, y in val])
    first_targets = np.concatenate([-log_transition[x[:, 0], y[:, 0]] for x, y in val])
    assert abs(losses.mean() - irreducible) < 0.02
    assert abs(first_targets.mean() - irreducible) < 0.15  # 508 targets only


# --- the batch stream -----------------------------------------------------------------------------


def stream(dm: TokenDataModule, n: int, global_step: int | None = None, **trainer) -> list[tuple]:
    """The first n batches of the loader a trainer at this global_step would get."""
    if global_step is not None:
        cpu = SimpleNamespace(root_device=torch.device("cpu"))
        trainer = (
            dict(accumulate_grad_batches=1, world_size=1, global_rank=0, strategy=cpu) | trainer
        )
        dm.trainer = SimpleNamespace(global_step=global_step, **trainer)
    batches = iter(dm.train_dataloader())
    dm.trainer = None
    return [next(batches) for _ in range(n)]


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )


def test_batch_k_depends_only_on_seed_and_k(tmp_path):
    shard_corpus(tmp_path / "shards")
    make = lambda seed: _setup(
        ShardsDataModule(path=str(tmp_path / "shards"), vocab_size=65536, seed=seed, **SMALL)
    )
    dm = make(1)
    # 45_000 - 256 tokens make 2631 windows, 657 batches of 4: 1000 batches cross an epoch.
    from_start = stream(dm, 1000)
    assert same(from_start, stream(make(1), 1000))
    assert not same(from_start[:5], stream(make(2), 5))
    assert same(stream(dm, 10, global_step=700), from_start[700:710])
    assert same(stream(dm, 5, global_step=3), from_start[3:8])
    # Each of 2 devices takes every other batch; with gradient accumulation a step is 2 batches.
    assert same(stream(dm, 5, global_step=0, world_size=2, global_rank=1), from_start[1:10:2])
    assert same(stream(dm, 5, global_step=3, world_size=2, global_rank=0), from_start[6:15:2])
    assert same(stream(dm, 5, global_step=3, accumulate_grad_batches=2), from_start[6:11])


def test_no_window_repeats_within_an_epoch_and_epochs_differ(tmp_path):
    shard_corpus(tmp_path / "shards")
    dm = _setup(ShardsDataModule(path=str(tmp_path / "shards"), vocab_size=65536, **SMALL))
    batches = TrainBatches(dm.train_split, 4, 16, seed=0)
    n_windows = batches.n_windows
    epoch = np.concatenate([batches.window_indices(k) for k in range(n_windows // 4)])
    assert len(np.unique(epoch)) == len(epoch)
    next_epoch = np.concatenate(
        [batches.window_indices(k) for k in range(n_windows // 4 + 1, 2 * n_windows // 4)]
    )
    assert not np.array_equal(epoch[4 : 4 + len(next_epoch)], next_epoch)
    # A window starts at a multiple of seq_len+1 (tokens here are their positions).
    x, _ = batches.batch(0)
    assert (x[:, 0] % 17 == 0).all()


def test_val_split_is_fixed_and_disjoint_from_train(tmp_path):
    shard_corpus(tmp_path / "shards")
    make = lambda seed, batch_size: _setup(
        ShardsDataModule(
            path=str(tmp_path / "shards"),
            vocab_size=65536,
            seed=seed,
            batch_size=batch_size,
            seq_len=16,
            val_tokens=300,
        )
    )
    first, second = make(0, 4), make(1, 7)
    val_first = torch.cat([x for x, _ in first.val_dataloader()])
    val_second = torch.cat([x for x, _ in second.val_dataloader()])
    assert torch.equal(val_first, val_second)
    val_positions = set(
        torch.cat([torch.cat([x, y[:, -1:]], 1) for x, y in first.val_dataloader()])
        .ravel()
        .tolist()
    )
    train_positions = set()
    for x, y in stream(first, len(first.train_split) // 17 // 4 + 5):
        train_positions |= set(torch.cat([x, y[:, -1:]], 1).ravel().tolist())
    assert not val_positions & train_positions
    assert min(val_positions) >= 45_000 - 300


def test_workers_do_not_duplicate_batches():
    dm = _setup(SyntheticDataModule(vocab_size=32, n_next=4, n_train_tokens=20_000, **SMALL))
    expected = stream(dm, 6)
    dm.num_workers = 2
    assert same(stream(dm, 6), expected)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
def test_resume_through_lightning_sees_the_uninterrupted_batches(tmp_path):
    """A tiny LightningModule (not the project's model) records each training batch; a run stopped
    after 3 steps and resumed from its checkpoint sees the same 6 batches as one run of 6."""
    import pytorch_lightning as pl

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(32, 32)
            self.seen: list[torch.Tensor] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.seen.append(x.clone())
            return torch.nn.functional.cross_entropy(self.embedding(x).flatten(0, 1), y.flatten())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(max_steps, ckpt_path=None, save_to=None):
        dm = SyntheticDataModule(vocab_size=32, n_next=4, n_train_tokens=20_000, seed=3, **SMALL)
        module = Recorder()
        trainer = pl.Trainer(
            max_steps=max_steps,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            default_root_dir=tmp_path,
        )
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        if save_to:
            trainer.save_checkpoint(save_to)
        return module.seen

    uninterrupted = fit(6)
    first_half = fit(3, save_to=tmp_path / "half.ckpt")
    second_half = fit(6, ckpt_path=tmp_path / "half.ckpt")
    assert len(uninterrupted) == 6 and len(first_half) == 3 and len(second_half) == 3
    assert all(
        torch.equal(a, b) for a, b in zip(uninterrupted, first_half + second_half, strict=True)
    )


# --- tokenizers and the cache ---------------------------------------------------------------------


def test_bpe_trains_caches_and_reloads(tmp_path, monkeypatch):
    corpus = write_text_corpus(tmp_path / "corpus")
    config = dict(
        path=str(corpus),
        tokenizer="bpe",
        bpe_vocab_size=300,
        cache_dir=str(tmp_path / "cache"),
        **SMALL,
    )
    dm = _setup(TextDataModule(**config))
    check_batches(dm, 4, 16)
    metadata = dm.metadata()
    assert metadata["vocab_size"] == 300 and metadata["bytes_per_token"] > 1.2
    cache = Path(metadata["cache_path"])
    assert (cache / "tokenizer.json").exists()
    meta = json.loads((cache / "meta.json").read_text())
    # BPE never saw the validation text: it trained on bytes before the last 16 per val token.
    assert meta["bpe_trained_on_bytes"] == meta["n_bytes"] - MAX_BPE_TOKEN_BYTES * 256

    monkeypatch.setattr(BPETokenizer, "train", lambda *a, **k: pytest.fail("retrained"))
    again = _setup(TextDataModule(**config))
    assert again.metadata() == metadata
    assert isinstance(again.tokenizer, BPETokenizer)
    text = again.tokenizer.decode(again.val_split.read(0, len(again.val_split)))
    assert (corpus / "doc_11.txt").read_text().endswith(text)


def test_cache_key_separates_tokenizers_and_content(tmp_path):
    corpus = write_text_corpus(tmp_path / "corpus", n_files=3)
    cache = tmp_path / "cache"
    paths = {
        _setup(TextDataModule(path=str(corpus), cache_dir=str(cache), **SMALL)).metadata()[
            "cache_path"
        ],
        _setup(
            TextDataModule(
                path=str(corpus), tokenizer="bpe", bpe_vocab_size=280, cache_dir=str(cache), **SMALL
            )
        ).metadata()["cache_path"],
    }
    (corpus / "doc_00.txt").write_text("changed " * 500)
    paths.add(
        _setup(TextDataModule(path=str(corpus), cache_dir=str(cache), **SMALL)).metadata()[
            "cache_path"
        ]
    )
    assert len(paths) == 3


def _prepare_in_child(config: dict, barrier, results) -> None:
    from scalinglab.data import corpus

    tokenize = corpus._tokenize

    def counted_tokenize(*args, **kwargs):
        results.put("built")
        return tokenize(*args, **kwargs)

    corpus._tokenize = counted_tokenize
    barrier.wait()  # both processes start preparing at the same moment
    dm = TextDataModule(**config)
    dm.setup("fit")
    results.put(
        (
            dm.metadata()["cache_path"],
            dm.metadata()["fingerprint"],
            dm.train_split.read(0, 1000).tolist(),
        )
    )


def test_concurrent_preparation_makes_one_cache(tmp_path):
    corpus = write_text_corpus(tmp_path / "corpus", n_files=40)
    cache = tmp_path / "cache"
    config = dict(
        path=str(corpus), tokenizer="bpe", bpe_vocab_size=400, cache_dir=str(cache), **SMALL
    )
    context = multiprocessing.get_context("fork")  # spawn would spend seconds importing torch
    barrier, results = context.Barrier(2), context.Queue()
    processes = [
        context.Process(target=_prepare_in_child, args=(config, barrier, results)) for _ in range(2)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in range(3)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert outcomes.count("built") == 1  # one process built while the other waited for its lock
    outcomes.remove("built")
    assert outcomes[0] == outcomes[1]
    visible = [p.name for p in cache.iterdir() if not p.name.startswith(".")]
    assert visible == [Path(outcomes[0][0]).name]
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name]
    dm = _setup(TextDataModule(**config))
    assert dm.metadata()["cache_path"] == outcomes[0][0]
    for shard in Path(outcomes[0][0]).glob("*.bin"):
        read_shard(shard)


def test_scaling_prepare_writes_several_shards_and_keeps_out_for_one_corpus(tmp_path, capsys):
    from scalinglab.data.prepare import main

    corpus = write_text_corpus(tmp_path / "corpus", n_files=4)
    out = tmp_path / "out"
    args = ["--source", "text", "--path", str(corpus), "--out", str(out)]
    assert main([*args, "--shard-tokens", "5000"]) == 0
    n_bytes = sum(f.stat().st_size for f in corpus.iterdir())
    assert len(list(out.glob("*.bin"))) == -(-n_bytes // 5000)
    assert [len(read_shard(f)) for f in sorted(out.glob("*.bin"))][:-1] == [5000] * (
        n_bytes // 5000
    )
    dm = _setup(ShardsDataModule(path=str(out), **SMALL))
    expected = b"".join(f.read_bytes() for f in sorted(corpus.iterdir()))
    n_train = len(dm.train_split)
    assert bytes(dm.train_split.read(0, n_train).astype(np.uint8)) == expected[:n_train]
    assert main(args) == 0  # already prepared: nothing to do
    assert (
        main([*args, "--tokenizer", "bpe", "--bpe-vocab-size", "300", "--val-tokens", "256"]) == 2
    )
    assert "already holds a different corpus" in capsys.readouterr().err


# --- Hugging Face datasets via scaling-prepare ----------------------------------------------------


def test_hf_dataset_via_scaling_prepare(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    from scalinglab.data import HFDataModule
    from scalinglab.data.prepare import main

    texts = [
        f"document {i}: " + "the quick brown fox jumps over the lazy dog. " * (i % 7 + 1)
        for i in range(300)
    ]
    datasets.Dataset.from_dict({"text": texts, "id": list(range(300))}).save_to_disk(
        str(tmp_path / "saved")
    )
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    n_bytes = sum(len(t.encode()) for t in texts)

    # Into shards for data=shards.
    assert (
        main(["--source", "hf", "--path", str(tmp_path / "saved"), "--out", str(tmp_path / "out")])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["n_tokens"] == n_bytes
    dm = _setup(ShardsDataModule(path=str(tmp_path / "out"), **SMALL))
    assert dm.vocab_size == 256 and dm.metadata()["tokenizer"] == "bytes"
    assert len(dm.train_split) + len(dm.val_split) == n_bytes
    check_batches(dm, 4, 16)

    # Into the cache that data=hf then reads without tokenizing again.
    cache = tmp_path / "cache"
    args = ["--source", "hf", "--path", str(jsonl), "--text-field", "body", "--tokenizer", "bpe"]
    assert (
        main([*args, "--bpe-vocab-size", "300", "--val-tokens", "256", "--cache-dir", str(cache)])
        == 0
    )
    prepared = json.loads(capsys.readouterr().out)["out"]
    hf = HFDataModule(
        path=str(jsonl),
        text_field="body",
        tokenizer="bpe",
        bpe_vocab_size=300,
        cache_dir=str(cache),
        **SMALL,
    )
    hf.prepare_data()
    hf.setup("fit")
    check_batches(hf, 4, 16)
    assert hf.metadata()["cache_path"] == prepared and hf.vocab_size == 300

    assert (
        main(
            [
                "--source",
                "hf",
                "--path",
                str(jsonl),
                "--text-field",
                "nope",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "data.text_field='nope'" in capsys.readouterr().err


# --- Hydra configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["python_stdlib", "text", "synthetic", "shards", "hf"])
def test_config_builds_its_class(tmp_path, name):
    shard_corpus(tmp_path / "shards")
    write_text_corpus(tmp_path / "corpus", n_files=2)
    data = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    assert data.batch_size == 16 and data.seq_len == 128
    if name in ("text", "shards", "hf"):
        data.path = str(tmp_path / ("shards" if name == "shards" else "corpus"))
    root = OmegaConf.create(
        {"seed": 5, "paths": {"cache_dir": str(tmp_path / "cache")}, "data": data}
    )
    dm = hydra.utils.instantiate(root.data)
    assert type(dm).__name__ == root.data._target_.rsplit(".", 1)[1]
    assert isinstance(dm, TokenDataModule) and dm.seed == 5


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, key",
    [
        (lambda tmp: TextDataModule(path=None), "data.path"),
        (lambda tmp: TextDataModule(path=str(tmp / "missing")), "data.path"),
        (lambda tmp: TextDataModule(path=str(tmp / "*.nothing")), "data.path"),
        (lambda tmp: TextDataModule(path=str(_empty_files(tmp))), "empty"),
        (lambda tmp: ShardsDataModule(path=str(tmp / "missing")).setup("fit"), "data.path"),
        (lambda tmp: ShardsDataModule(path=None).setup("fit"), "data.path"),
        (lambda tmp: SyntheticDataModule(batch_size=0), "data.batch_size"),
        (lambda tmp: SyntheticDataModule(seq_len=-1), "data.seq_len"),
        (lambda tmp: SyntheticDataModule(val_tokens=0), "data.val_tokens"),
        (lambda tmp: SyntheticDataModule(seed=-1), "data.seed"),
        (lambda tmp: SyntheticDataModule(seq_len=128, val_tokens=100), "data.val_tokens"),
        (lambda tmp: SyntheticDataModule(n_train_tokens=1000).setup("fit"), "data.batch_size"),
        (lambda tmp: TextDataModule(path=str(tmp), tokenizer="words"), "data.tokenizer"),
        (
            lambda tmp: TextDataModule(path=str(tmp), tokenizer="bpe", bpe_vocab_size=100),
            "data.bpe_vocab_size",
        ),
        (
            lambda tmp: TextDataModule(
                path=str(_small_text(tmp)), cache_dir=str(tmp / "c"), **SMALL
            ).setup("fit"),
            "data.batch_size",
        ),
        (
            lambda tmp: TextDataModule(
                path=str(_small_text(tmp)), cache_dir=str(tmp / "c"), val_tokens=5000
            ).setup("fit"),
            "data.val_tokens",
        ),
    ],
)
def test_bad_input_is_a_config_error_naming_the_key(tmp_path, make, key):
    (tmp_path / "a.txt").write_text("some text " * 10)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        make(tmp_path)
    assert "\n" not in str(error.value)


def _empty_files(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    (tmp / "empty" / "a.txt").write_text("")
    return tmp / "empty"


def _small_text(tmp: Path) -> Path:
    (tmp / "small.txt").write_text("x" * 300)
    return tmp / "small.txt"


def test_gpt2_without_tiktoken_is_a_config_error(tmp_path):
    try:
        import tiktoken  # noqa: F401

        pytest.skip("tiktoken is installed")
    except ImportError:
        pass
    write_text_corpus(tmp_path / "corpus", n_files=1)
    dm = TextDataModule(
        path=str(tmp_path / "corpus"), tokenizer="gpt2", cache_dir=str(tmp_path / "c"), **SMALL
    )
    with pytest.raises(ConfigError, match="data.tokenizer=gpt2"):
        dm.setup("fit")
