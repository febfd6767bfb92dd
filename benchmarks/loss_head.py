"""The logit head and cross-entropy alone: materialised logits against scalinglab's chunked loss.

    python benchmarks/loss_head.py                          # the 7M shape's batch on a GPU
    python benchmarks/loss_head.py --chunk-sizes 2048,8192 --no-compile

Times forward + backward of `F.cross_entropy(F.linear(h, W).float(), t)` and of
`scalinglab.ops.chunked_cross_entropy(h, W, t, chunk_size)` under bf16 autocast, for N tokens of
width d and V classes (default: 64 x 1024 tokens, d 128, V 50304, where the logits dominate a
step), with CUDA events over 20 repetitions after 3 warm-ups, and peak memory. One bf16 matmul
(N, d) x (d, V) is timed too: the head's floor is three of them (forward, and the two gradients).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from scalinglab.ops import chunked_cross_entropy


def cuda_ms(fn: Callable[[], object], repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--chunk-sizes", default="2048,4096,8192")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    n, d, v = args.tokens, args.d_model, args.vocab
    gen = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(n, d, device="cuda", generator=gen).requires_grad_()
    weight = (torch.randn(v, d, device="cuda", generator=gen) / d**0.5).requires_grad_()
    targets = torch.randint(0, v, (n,), device="cuda", generator=gen)

    h, w = hidden.detach().bfloat16(), weight.detach().bfloat16()
    ms = cuda_ms(lambda: h @ w.T)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, N={n} d={d} V={v}")
    print(f"one bf16 matmul (N, d) x (d, V): {ms:.2f} ms, {2 * n * d * v / ms / 1e9:.0f} TFLOP/s")

    def materialised(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(F.linear(h, w).float(), t)

    losses = {"materialised": materialised}
    for c in map(int, args.chunk_sizes.split(",")):
        losses[f"chunked {c}"] = lambda h, w, t, c=c: chunked_cross_entropy(h, w, t, c)
    print("| loss | compiled | forward + backward ms | peak GB |\n|---|---|---:|---:|")
    for name, loss_fn in losses.items():
        fn = torch.compile(loss_fn) if args.compile else loss_fn

        def step(fn: Callable = fn) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                fn(hidden, weight, targets).backward()

        step()  # compile outside the measurement
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ms = cuda_ms(step)
        peak = torch.cuda.max_memory_allocated() / 1e9
        print(f"| {name} | {args.compile} | {ms:.2f} | {peak:.1f} |")


if __name__ == "__main__":
    main()
