"""The output head and cross-entropy in chunks of tokens (train.loss_chunk_tokens).

`Transformer.loss_head` makes the logits of every token at once: (tokens × vocab) in the
matmul's dtype, an fp32 copy for the softmax, and in the backward their gradient, several GB
at llama-1b's 16×2048 tokens and 32k vocabulary (tens of GB at a 128k one). Here the tokens
go through in chunks of N, and each chunk's gradient is taken in the forward itself (Liger
Kernel's fused linear cross-entropy): with g = ∂loss/∂logits = softmax − one-hot (times
the soft-cap's derivative), ∂h = g·W and ∂W = Σ gᵀ·h. So nothing larger than chunk × vocab
is ever held; what is kept for the backward is ∂h (tokens × d) and ∂W (vocab × d, fp32),
which the backward only scales by the incoming gradient. The result equals `loss_head`'s up
to float rounding (tests/test_chunked_loss.py holds it to a float64 reference).

The price: the head's matmuls run in the forward also when no backward follows (then they
are skipped: under no_grad only the loss is computed), and ∂W lives from the forward to
the backward in fp32. Double backward is not supported (nothing here needs it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

IGNORE = -100  # targets never scored, as F.cross_entropy's default ignore_index


def _compute_dtype(h: torch.Tensor) -> torch.dtype:
    """The logits' dtype: autocast's where it is on (as F.linear would give), else h's."""
    dev = h.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype


def _chunks(h, weight, targets, chunk, cap, mean, want_h, want_w):
    """(the loss, ∂loss/∂h, ∂loss/∂W (fp32)), the loss the mean or the sum over the scored
    tokens, the grads None where not wanted. h (n, d) and weight (V, d) already in the compute
    dtype; autocast is off here, so every dtype is the one written."""
    n = h.shape[0]
    total = torch.zeros((), device=h.device, dtype=torch.float32)
    grad_h = torch.empty_like(h) if want_h else None
    grad_w = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if want_w else None
    scored = targets != IGNORE
    count = scored.sum()
    # each row's weight in the loss; the mean over no scored token is nan, as F.cross_entropy's,
    # and its gradient 0, as F.cross_entropy's (hence the clamp)
    row_weight = scored / count.clamp_min(1) if mean else scored.float()
    for s in range(0, n, chunk):
        hc, tc, ok, wc = h[s:s + chunk], targets[s:s + chunk], scored[s:s + chunk], row_weight[s:s + chunk]
        z = F.linear(hc, weight).float()  # (c, V): the vocab-wide tensors are one chunk's
        if cap is not None:
            t = z.div_(cap).tanh_()  # in place: z is this chunk's own (an fp32 copy, or fp32 already)
            z = t * cap
        logp = torch.log_softmax(z, dim=-1)
        del z  # (t stays, for the cap's derivative)
        tgt = torch.where(ok, tc, 0)[:, None]  # ignored rows look up class 0, then count for nothing
        total = total - (logp.gather(1, tgt)[:, 0] * ok).sum()
        if not (want_h or want_w):
            continue
        g = logp.exp_()  # the softmax, in place
        g.scatter_add_(1, tgt, torch.full_like(tgt, -1, dtype=g.dtype))  # − one-hot
        g.mul_(wc[:, None])  # 0 on ignored rows, 1/count under the mean (before the cast, as F.cross_entropy)
        if cap is not None:
            g.mul_(t.mul_(t).neg_().add_(1))  # d(c·tanh(x/c))/dx = 1 − tanh², in t's memory
        g = g.to(h.dtype)
        if want_h:
            grad_h[s:s + chunk] = g @ weight
        if want_w:
            # each chunk's product in the matmul's dtype (as one unchunked matmul would give),
            # summed over chunks in fp32
            grad_w += (g.t() @ hc).float()
    return (total / count if mean else total), grad_h, grad_w


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """loss = cross_entropy(softcap(h @ Wᵀ), targets) with the gradients taken in the forward."""

    @staticmethod
    def forward(ctx, h, weight, targets, chunk: int, cap: float | None, reduction: str):
        dtype = _compute_dtype(h)
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(h.device.type, enabled=False):
            loss, gh, gw = _chunks(h.reshape(-1, h.shape[-1]).to(dtype), weight.to(dtype), targets.reshape(-1),
                                   chunk, cap, reduction == "mean", want_h, want_w)
        ctx.h_shape, ctx.h_dtype, ctx.w_dtype = h.shape, h.dtype, weight.dtype
        ctx.save_for_backward(gh, gw)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        gh, gw = ctx.saved_tensors
        dh = (gh * grad_out).to(ctx.h_dtype).view(ctx.h_shape) if gh is not None else None
        dw = (gw * grad_out).to(ctx.w_dtype) if gw is not None else None
        return dh, dw, None, None, None, None


def chunked_loss_head(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str,
                      cap: float | None = None, *, chunk_tokens: int) -> torch.Tensor:
    """`Transformer.loss_head`, chunk_tokens tokens at a time (see the module's docstring);
    targets of -100 are ignored, reduction "mean" or "sum"."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"chunked loss head: reduction must be 'mean' or 'sum', got {reduction!r}")
    if chunk_tokens < 1:
        raise ValueError(f"train.loss_chunk_tokens must be at least 1 (got {chunk_tokens})")
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return ChunkedLinearCrossEntropy.apply(h, weight, targets, chunk_tokens, cap, reduction)
    # nothing to differentiate (eval): the loss alone, chunk by chunk
    dtype = _compute_dtype(h)
    with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
        loss, _, _ = _chunks(h.reshape(-1, h.shape[-1]).to(dtype), weight.to(dtype), targets.reshape(-1),
                             chunk_tokens, cap, reduction == "mean", False, False)
    return loss
