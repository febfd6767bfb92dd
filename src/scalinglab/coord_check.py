"""scaling-coord-check: does a parametrization keep activations the same size as width grows?

Yang et al.'s coordinate check (Tensor Programs V, section 6): train models of several widths for a
few steps at one learning rate and record the root-mean-square of each layer's output coordinates.
Under muP the curves are flat in width (each update changes every layer by O(1) per coordinate);
under sp the hidden updates, and with them the logits, grow with width (Adam's updates are O(lr)
per entry whatever the width, so a matrix-vector product moves by O(lr x width)).

    scaling-coord-check --widths 32,64,128,256 --parametrizations sp,mup --json coord.json \\
        --plot coord.png
    scaling-coord-check --parametrizations completep --depths 2,8 --plot depth.png

Data: a random sparse Markov language (scalinglab.data.synthetic), made here; every model sees the
same batches (one seed per step), on the CPU with one thread, so the check is deterministic and
takes seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scalinglab.data.synthetic import MarkovChain
from scalinglab.model import GPT, GPTConfig
from scalinglab.module import parameter_groups

VOCAB_SIZE = 128
SEQ_LEN = 64
BATCH_SIZE = 8
N_HEADS = 2  # fixed: head_dim grows with width, where muP's 1/head_dim attention scale matters
OPTIMIZER = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.0}


def batches(steps: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """steps + 1 (inputs, targets) batches: one per recorded forward pass, the same for every
    model."""
    chain = MarkovChain.random(VOCAB_SIZE, n_next=8, seed=seed)
    out = []
    for step in range(steps + 1):
        tokens = torch.from_numpy(chain.sample(BATCH_SIZE, SEQ_LEN + 1, seed=[seed, step]))
        out.append((tokens[:, :-1], tokens[:, 1:]))
    return out


def layer_outputs(model: GPT) -> dict[str, torch.nn.Module]:
    """The modules whose outputs are recorded: embedding, each block, the head (the logits)."""
    layers = {"embedding": model.embed}
    layers.update({f"block_{i}": block for i, block in enumerate(model.blocks)})
    layers["logits"] = model.head
    return layers


def train_and_record(
    cfg: GPTConfig, data: list[tuple[torch.Tensor, torch.Tensor]], lr: float, seed: int
) -> list[dict]:
    """Rows {step, layer, rms}: step t is the forward pass after t AdamW updates."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, cfg, {**OPTIMIZER, "lr": lr}), **{**OPTIMIZER, "lr": lr}
    )
    rms: dict[str, float] = {}

    def record(name: str):
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            rms[name] = output.detach().float().pow(2).mean().sqrt().item()

        return hook

    for name, module in layer_outputs(model).items():
        module.register_forward_hook(record(name))
    rows = []
    for step, (x, y) in enumerate(data):
        logits = model(x)
        rows += [{"step": step, "layer": name, "rms": value} for name, value in rms.items()]
        if step == len(data) - 1:
            break
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return rows


def coord_check(
    parametrizations: list[str],
    widths: list[int],
    depths: list[int],
    steps: int = 5,
    lr: float = OPTIMIZER["lr"],
    seed: int = 0,
    base_width: int = 64,
    base_depth: int = 2,
) -> list[dict]:
    """Rows {parametrization, width, depth, step, layer, rms} for every model of the grid."""
    data = batches(steps, seed)
    rows = []
    for parametrization in parametrizations:
        for depth in depths:
            for width in widths:
                cfg = GPTConfig(
                    vocab_size=VOCAB_SIZE, max_seq_len=SEQ_LEN, d_model=width, n_layers=depth,
                    n_heads=N_HEADS, parametrization=parametrization, base_width=base_width,
                    base_depth=base_depth,
                )  # fmt: skip
                shape = {"parametrization": parametrization, "width": width, "depth": depth}
                rows += [{**shape, **row} for row in train_and_record(cfg, data, lr, seed)]
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """rms vs width on log axes, one line per step; a row of panels per (parametrization, depth),
    columns the embedding, the last block's output and the logits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["parametrization"], r["depth"]) for r in rows}, key=_panel_order)
    steps = sorted({r["step"] for r in rows})
    columns = ("embedding", "last block", "logits")
    fig, axes = plt.subplots(
        len(panels), 3, figsize=(10, 2.6 * len(panels)), squeeze=False, sharex=True
    )
    colors = plt.cm.viridis([i / max(1, len(steps) - 1) for i in range(len(steps))])
    for (parametrization, depth), ax_row in zip(panels, axes, strict=True):
        layers = ("embedding", f"block_{depth - 1}", "logits")
        for ax, layer, title in zip(ax_row, layers, columns, strict=True):
            for step, color in zip(steps, colors, strict=True):
                points = sorted(
                    (r["width"], r["rms"])
                    for r in rows
                    if (r["parametrization"], r["depth"], r["layer"], r["step"])
                    == (parametrization, depth, layer, step)
                )
                ax.plot(*zip(*points, strict=True), marker="o", color=color, label=f"step {step}")
            ax.set(xscale="log", yscale="log", title=f"{parametrization}, {depth} layers: {title}")
            ax.set_xticks([w for w, _ in points], [str(w) for w, _ in points], minor=False)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax_row[0].set_ylabel("rms of coordinates")
    for ax in axes[-1]:
        ax.set_xlabel("width (d_model)")
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel_order(panel: tuple[str, int]) -> tuple[int, int]:
    order = ("sp", "mup", "completep")
    return (order.index(panel[0]) if panel[0] in order else len(order), panel[1])


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scaling-coord-check", description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=_ints, default=[32, 64, 128, 256])
    parser.add_argument("--depths", type=_ints, default=[2], help="n_layers (vary for completep)")
    parser.add_argument("--steps", type=int, default=5, help="AdamW updates (steps 0..N recorded)")
    parser.add_argument("--lr", type=float, default=OPTIMIZER["lr"], help="the base learning rate")
    parser.add_argument(
        "--parametrizations", type=lambda s: s.split(","), default=["sp", "mup", "completep"]
    )
    parser.add_argument("--base-width", type=int, default=64)
    parser.add_argument("--base-depth", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--plot", type=Path, help="write the figure here (PNG, PDF, SVG)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = coord_check(
        args.parametrizations, args.widths, args.depths, args.steps, args.lr, args.seed,
        args.base_width, args.base_depth,
    )  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.plot:
        plot(rows, args.plot)
    print(summary(rows))


def summary(rows: list[dict]) -> str:
    """The last step's rms per width, for the embedding, the last block and the logits."""
    last = max(r["step"] for r in rows)
    lines = [f"rms at step {last}"]
    for parametrization, depth in sorted(
        {(r["parametrization"], r["depth"]) for r in rows}, key=_panel_order
    ):
        for layer in ("embedding", f"block_{depth - 1}", "logits"):
            values = sorted(
                (r["width"], r["rms"])
                for r in rows
                if (r["parametrization"], r["depth"], r["layer"], r["step"])
                == (parametrization, depth, layer, last)
            )
            cells = "  ".join(f"{w}:{v:.3g}" for w, v in values)
            lines.append(f"{parametrization:>9} L={depth} {layer:>9}  {cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
