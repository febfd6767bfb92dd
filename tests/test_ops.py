"""chunked_cross_entropy: the same loss and gradients as materialised logits, without them."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from scalinglab.ops import chunked_cross_entropy


def inputs(n: int, d: int, v: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen, dtype=dtype, requires_grad=True)
    weight = (torch.randn(v, d, generator=gen, dtype=dtype) / d**0.5).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=gen)
    return hidden, weight, targets


def loss_and_grads(loss_fn, hidden, weight, targets):
    hidden.grad = weight.grad = None
    loss = loss_fn(hidden, weight, targets)
    loss.backward()
    return loss.detach(), hidden.grad.clone(), weight.grad.clone()


def reference(hidden, weight, targets):
    return F.cross_entropy((hidden @ weight.T).float(), targets)


@pytest.mark.parametrize(
    "n, d, v, chunk_size",
    [
        (1000, 32, 777, 128),  # N not a multiple of the chunk, V not a multiple of anything
        (512, 16, 1001, 64),  # exact chunks
        (513, 8, 50, 100),
        (7, 4, 3, 1000),  # one chunk larger than N
        (33, 24, 257, 1),  # one row at a time
    ],
)
def test_matches_materialised_logits(n: int, d: int, v: int, chunk_size: int) -> None:
    hidden, weight, targets = inputs(n, d, v)
    loss, grad_h, grad_w = loss_and_grads(
        lambda h, w, t: chunked_cross_entropy(h, w, t, chunk_size), hidden, weight, targets
    )
    ref_loss, ref_h, ref_w = loss_and_grads(reference, hidden, weight, targets)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_h, ref_h, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_w, ref_w, rtol=1e-5, atol=1e-7)


def test_tied_embedding_gets_both_gradients() -> None:
    """Embedding lookup -> a layer -> the head through the same matrix: its gradient is the sum of
    the lookup's and the head's, as with materialised logits."""
    torch.manual_seed(0)
    vocab, d_model = 301, 16
    embed, layer = nn.Embedding(vocab, d_model), nn.Linear(d_model, d_model)
    idx, targets = torch.randint(0, vocab, (4, 50)), torch.randint(0, vocab, (4, 50))

    def grads(loss_fn) -> list[torch.Tensor]:
        embed.zero_grad(), layer.zero_grad()
        hidden = torch.tanh(layer(embed(idx))).flatten(0, 1)
        loss_fn(hidden, embed.weight, targets.flatten()).backward()
        return [p.grad.clone() for p in (embed.weight, layer.weight, layer.bias)]

    chunked = grads(lambda h, w, t: chunked_cross_entropy(h, w, t, chunk_size=32))
    for got, want in zip(chunked, grads(reference), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_gradcheck_float64() -> None:
    hidden, weight, targets = inputs(10, 3, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda h, w: chunked_cross_entropy(h, w, targets, chunk_size=4), (hidden, weight)
    )


def test_autocast_bf16_matches_an_autocast_linear_head() -> None:
    """The GPU path, on the CPU: bf16 matmuls, fp32 loss, fp32 gradients for fp32 parameters."""
    hidden, weight, targets = inputs(300, 32, 500)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grad_h, grad_w = loss_and_grads(
            lambda h, w, t: chunked_cross_entropy(h, w, t, chunk_size=64), hidden, weight, targets
        )
        ref_loss, ref_h, ref_w = loss_and_grads(
            lambda h, w, t: F.cross_entropy(F.linear(h, w).float(), t), hidden, weight, targets
        )
    assert loss.dtype == grad_h.dtype == grad_w.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, rtol=1e-3, atol=1e-3)
    for got, want in ((grad_h, ref_h), (grad_w, ref_w)):  # bf16 rounding, relative to the scale
        torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-2 * want.abs().max().item())


def test_no_grad_and_bad_chunk_size() -> None:
    hidden, weight, targets = inputs(20, 4, 9)
    with torch.no_grad():
        loss = chunked_cross_entropy(hidden, weight, targets, chunk_size=6)
    torch.testing.assert_close(loss, reference(hidden, weight, targets).detach())
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_cross_entropy(hidden, weight, targets, chunk_size=0)


class LargestTensor(TorchDispatchMode):
    """Records the largest numel of any tensor an aten op returns while active.

    Every tensor that the forward or backward creates (matmul outputs, exp, casts, empty buffers)
    is an aten op's output and passes through here, whatever allocator or device; views count too,
    and they are never larger than their base. Autograd's engine carries the mode into backward.
    """

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_full_logits_are_never_materialised() -> None:
    n, v, chunk_size = 8192, 4000, 256  # full logits: 32.8M elements (131 MB fp32); a chunk 1M
    hidden, weight, targets = inputs(n, 16, v)
    forward, backward = LargestTensor(), LargestTensor()
    with forward:
        loss = chunked_cross_entropy(hidden, weight, targets, chunk_size)
    with backward:
        loss.backward()
    assert forward.largest == backward.largest == chunk_size * v  # each chunk's logits, no more

    hidden.grad = weight.grad = None
    with LargestTensor() as control:  # the detector sees the materialised logits when they exist
        reference(hidden, weight, targets).backward()
    assert control.largest == n * v


def test_compiles_as_one_graph() -> None:
    """`compile=true` compiles GPT.loss; the chunk loop must trace without graph breaks."""
    hidden, weight, targets = inputs(300, 16, 301)
    compiled = torch.compile(chunked_cross_entropy, backend="aot_eager", fullgraph=True)
    got = loss_and_grads(lambda h, w, t: compiled(h, w, t, 128), hidden, weight, targets)
    want = loss_and_grads(reference, hidden, weight, targets)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
