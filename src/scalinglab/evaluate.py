"""Score a trained run on any data: `scaling-eval RUN_DIR data=NAME [data.KEY=VALUE ...]`.

The run's final checkpoint (`checkpoints/last.ckpt`, checked against its sha256, loaded as data,
weights_only=True, and refused unless its model shape and run_id are the run record's) is
evaluated on the validation split of a data config; the mean loss (nats per token), bits per byte
where the data knows its bytes per token, and the tokens scored go into the run's record under
the data's name (run.json "evals": {NAME: {...}}), which `load_runs` reads as `eval/NAME/val_loss`
columns: a ladder scored on several held-out corpora is fitted on each.

The data config is the run's own (`.hydra/config.yaml`): `data.*` overrides change it; `data=NAME`
composes another from conf/data/ (with `data.*` overrides on it), at the run's sequence length (the
model's context) unless `data.seq_len` is given.

A run is scored by its own objective, whatever the data: a masked-LM (objective=mlm) run by the
masked loss (nats per masked token, `tokens` counting the masked positions) on the data's
deterministic validation masks, the same for every run, with no bits per byte (a masked-token loss
is not a code length of the text). A next-token loss would let a bidirectional model read the
answer. Data whose mask token would be another id than the run's are refused.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from scalinglab.errors import ConfigError

log = logging.getLogger("scalinglab")


def data_override(overrides: list[str]) -> str | None:
    """The `data=NAME` choice among the overrides; None keeps the run's data."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "data":
            return value
    return None


def eval_config(run_dir: Path, overrides: list[str]) -> tuple[DictConfig, str]:
    """The run's config with its data replaced as the overrides say, and the data's name (the
    `data=` choice, else the run's own)."""
    from hydra import compose, initialize_config_dir

    import scalinglab.rules  # noqa: F401  (registers the resolvers a composed config reads)
    from scalinglab.guards import CONFIG_DIR

    others = [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] != "data"]
    if others:
        raise ConfigError(
            f"scaling-eval takes data overrides only (data=NAME, data.KEY=VALUE): {others}"
        )
    hydra_dir = run_dir / ".hydra"
    if not (hydra_dir / "config.yaml").exists():
        raise ConfigError(f"{run_dir}: no .hydra/config.yaml (not a run that scaling-train wrote)")
    cfg = OmegaConf.load(hydra_dir / "config.yaml")
    choice = data_override(overrides)
    if choice is None:
        name = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.choices.data
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        return cfg, str(name)
    given = {o.lstrip("+").split("=")[0] for o in overrides}
    context = [] if "data.seq_len" in given else [f"data.seq_len={cfg.data.seq_len}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        data = compose("train", overrides=[*overrides, *context]).data
    with open_dict(cfg):
        cfg.data = data  # its ${seed} and ${paths.*} read the run's
    return cfg, choice


def run_objective(causal: bool, overrides: list[str]) -> str:
    """The objective a run is scored by: its model's (a bidirectional model is a masked LM);
    another one asked for with data.objective is refused."""
    objective = "clm" if causal else "mlm"
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "data.objective" and value != objective:
            raise ConfigError(
                f"data.objective={value}: the run's model was trained for {objective}, and is "
                "scored by its own objective"
            )
    return objective


def load_model(checkpoint: Path, record: dict[str, Any] | None) -> tuple[Any, int]:
    """The run's model from a verified checkpoint, and the step it was saved at; refused unless
    it is the run's whose record is given (None: a checkpoint outside a run directory)."""
    import torch

    from scalinglab.callbacks import check_checkpoint, damage
    from scalinglab.module import LanguageModel

    if not checkpoint.exists():
        raise ConfigError(f"{checkpoint}: no such checkpoint (has the run trained?)")
    if why := damage(checkpoint):
        raise ConfigError(f"{checkpoint} is damaged ({why})")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if record is not None:
        check_checkpoint(state, record, checkpoint)
    module = LanguageModel(**{**state["hyper_parameters"], "compile": False})
    module.load_state_dict(state["state_dict"])
    return module.model.eval(), int(state["global_step"])


def check_vocab(
    data_info: dict[str, Any], run_data: dict[str, Any], vocab_size: int, name: str
) -> None:
    """Refuse data whose token ids the run's model cannot read, or reads as other tokens."""
    if data_info["vocab_size"] > vocab_size:
        raise ConfigError(
            f"data={name} has {data_info['vocab_size']} token ids, more than the run's vocabulary "
            f"of {vocab_size}: its model cannot score it"
        )
    ours, theirs = data_info.get("tokenizer"), run_data.get("tokenizer")
    if ours and theirs and ours != theirs:
        raise ConfigError(
            f"data={name} is tokenized by {ours}, the run's data by {theirs}: the same ids are "
            "other tokens"
        )
    ours, theirs = data_info.get("tokenizer_sha256"), run_data.get("tokenizer_sha256")
    if ours and theirs and ours != theirs:
        raise ConfigError(
            f"data={name} is tokenized by a {data_info.get('tokenizer')} tokenizer trained on "
            "other text than the run's (their tokenizer.json differ): the same ids are other tokens"
        )
    ours, theirs = data_info.get("mask_token_id"), run_data.get("mask_token_id")
    if theirs is not None and ours != theirs:
        raise ConfigError(
            f"data={name} would mask with id {ours}, the run's mask token is {theirs}: the model "
            "would read its masked positions as another token"
        )


def mean_loss(model: Any, batches: Any) -> tuple[float, int]:
    """(mean loss in nats per scored token, tokens scored) over the batches, as validation computes
    it in training: on a GPU under bf16 autocast (training's default precision there). Targets of
    IGNORE_INDEX (the unmasked positions of mlm batches) are not scored."""
    import torch

    from scalinglab.ops import IGNORE_INDEX

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    total, tokens = 0.0, 0
    with (
        torch.no_grad(),
        torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"),
    ):
        for x, y in batches:
            loss = model.loss(x.to(device), y.to(device))
            scored = int((y != IGNORE_INDEX).sum())
            total += float(loss) * scored
            tokens += scored
    return total / tokens, tokens


def evaluate(run_dir: str | Path, overrides: list[str], name: str | None = None) -> dict[str, Any]:
    """Score the run's checkpoint on the overrides' data and record it in run.json under the data's
    name (or `name`); returns the figures recorded."""
    from scalinglab.guards import build
    from scalinglab.records import RUN_FILE, holding, read_run, write_json_atomic

    run_dir = Path(run_dir)
    cfg, data_name = eval_config(run_dir, overrides)
    name = name or data_name
    record = read_run(run_dir)
    if record is None:
        raise ConfigError(f"{run_dir}: no {RUN_FILE}")
    model, step = load_model(run_dir / "checkpoints" / "last.ckpt", record)
    objective = run_objective(model.cfg.causal, overrides)
    with open_dict(cfg):
        cfg.data.objective = objective  # data=NAME composes a config without the run's
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    info = datamodule.metadata()
    check_vocab(info, record.get("data") or {}, model.cfg.vocab_size, name)
    val_loss, tokens = mean_loss(model, datamodule.val_dataloader())
    figures: dict[str, Any] = {"val_loss": val_loss, "tokens": tokens, "step": step}
    if info.get("bytes_per_token") and objective == "clm":
        figures["bits_per_byte"] = val_loss / math.log(2) / info["bytes_per_token"]
    if info.get("irreducible_loss") is not None:
        figures["irreducible_loss"] = info["irreducible_loss"]
    with holding(run_dir) as ours:  # a job writing its record now would overwrite ours
        if not ours:
            raise ConfigError(f"{run_dir} is held by its running job: evaluate it once it ends")
        record = read_run(run_dir) or record
        record.setdefault("evals", {})[name] = figures
        write_json_atomic(run_dir / RUN_FILE, record)
    return figures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaling-eval",
        description="Score a trained run's checkpoint on a data config's validation split; the "
        "loss (and bits per byte) goes into the run's run.json under 'evals', by the data's name.",
    )
    parser.add_argument("run_dir", type=Path, help="the run's directory (with run.json, .hydra/)")
    parser.add_argument(
        "overrides", nargs="*", help="data=NAME and data.KEY=VALUE (default: the run's own data)"
    )
    parser.add_argument(
        "--name", help="the record's name for this data (default: the data= choice)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from scalinglab.records import DamagedRecord

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        figures = evaluate(args.run_dir, args.overrides, args.name)
    except (ConfigError, DamagedRecord, OSError) as error:
        print(f"scaling-eval: error: {error}", file=sys.stderr)
        return 2
    shown = "  ".join(
        f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
    )
    print(f"{args.run_dir}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
