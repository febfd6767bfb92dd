"""Fused operations that the plain PyTorch path does wastefully.

`chunked_cross_entropy` is the logit head and the cross-entropy in one, without ever holding the
(N, V) logits. With a 50k vocabulary and a small model the logits dominate a step's memory and
bandwidth: 64k tokens make 6.6 GB of bf16 logits, twice that again as fp32 for the loss and its
gradient, while the rest of a d_model=128 model's activations take a fraction of it.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK_SIZE = 2048  # rows per chunk: 0.4 GB of fp32 logits at V=50304, large enough matmuls
IGNORE_INDEX = -100  # a target that is not predicted (F.cross_entropy's default): masked LM


def chunked_cross_entropy(
    hidden: Tensor, weight: Tensor, targets: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Tensor:
    """Mean cross-entropy (nats) of the logits `hidden @ weight.T` against `targets`.

    hidden (N, d), weight (V, d) (an output head, or the embedding matrix when tied), targets (N,)
    of class indices. Equal to `F.cross_entropy((hidden @ weight.T).float(), targets)`, but rows
    are processed `chunk_size` at a time: the forward keeps only each row's log-sum-exp (N floats)
    and the backward recomputes each chunk's logits to form softmax - onehot. Peak extra memory is
    O(chunk_size x V) instead of O(N x V); the price is one more (N, d) x (d, V) matmul, the
    recomputation.

    Under autocast the matmuls run in the autocast dtype (as `nn.Linear` would), the log-sum-exp
    and the softmax in fp32 (fp64 for fp64 inputs), and the weight gradient is accumulated over
    chunks in fp32. Class indices lie in [0, V), or are IGNORE_INDEX: those rows are left out of
    the loss and the mean (masked language modelling predicts only the masked positions).
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        # Cast outside the Function, so autograd casts the gradients back (and a tied embedding
        # receives this gradient plus its lookup's, in its own dtype).
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    with torch.autocast(device_type, enabled=False):
        return _ChunkedCrossEntropy.apply(hidden, weight, targets, chunk_size)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk_size: int) -> Tensor:
        if hidden.dtype != weight.dtype:
            raise TypeError(f"hidden is {hidden.dtype} but weight is {weight.dtype}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        n_rows = hidden.shape[0]
        ctx.acc_dtype = acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64
        lse = torch.empty(n_rows, dtype=acc, device=hidden.device)
        target_logits = torch.empty_like(lse)
        kept = targets != IGNORE_INDEX
        predicted = targets.where(kept, 0)  # any class: the row's loss is multiplied by 0
        for start in range(0, n_rows, chunk_size):
            rows = slice(start, start + chunk_size)
            logits = (hidden[rows] @ weight.T).to(acc)
            lse[rows] = torch.logsumexp(logits, dim=-1)
            target_logits[rows] = logits.gather(1, predicted[rows, None]).squeeze(1)
        ctx.chunk_size = chunk_size
        ctx.save_for_backward(hidden, weight, predicted, kept.to(acc), lse)
        return ((lse - target_logits) * kept).sum() / kept.sum()

    @staticmethod
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, targets, kept, lse = ctx.saved_tensors
        n_rows, chunk_size = hidden.shape[0], ctx.chunk_size
        grad_hidden = torch.empty_like(hidden)
        acc = ctx.acc_dtype
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        scale = kept * (grad_loss.to(acc) / kept.sum())  # d(mean)/d(row loss); 0 if ignored
        for start in range(0, n_rows, chunk_size):
            rows = slice(start, start + chunk_size)
            h = hidden[rows]
            # d(loss)/d(logits) = (softmax - onehot) / N, formed in place in the fp32 logits.
            grad_logits = (h @ weight.T).to(acc).sub_(lse[rows, None]).exp_()
            grad_logits[torch.arange(h.shape[0], device=h.device), targets[rows]] -= 1.0
            grad_logits = grad_logits.mul_(scale[rows, None]).to(hidden.dtype)
            grad_hidden[rows] = grad_logits @ weight
            grad_weight += grad_logits.T @ h
        return grad_hidden, grad_weight.to(weight.dtype), None, None
