"""The language-model loss without the vocabulary-wide logits: the output layer and the cross-entropy
computed together, a few hundred positions at a time.

A batch of 8 x 128 positions over a 49,152-token vocabulary has 50 M logits. Computed the library's
way (`model(**batch).loss`) they are written in bf16, copied to fp32, turned into log-probabilities,
and their gradient is filled, scattered and copied back: passes over 200 MB tensors that a LoRA
training on SmolLM2-135M holds at once (timed on 2 CPU cores it was about as fast; a third less
peak memory, docs/performance.md). Here each
chunk's logits are made, used for the loss and, in training, turned into their gradient at once
(softmax minus the one-hot target), which goes straight into the gradients of the hidden states and
of the output weights; the chunk's logits are then dropped. The arithmetic is the library's (the same
products in the same precision, the fp32 softmax), the memory traffic a fraction of it.

Only architectures whose output is a plain product with the (tied or untied) output weights take
this path (`head_of`); any other model, and a head this cannot do exactly, keeps the library's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bot.core.training.adapters import cached_token_index

# Positions per chunk: 256 x 49,152 fp32 logits are 50 MB; on 2 CPU cores 128 ran the products
# below their rate and 512 or 1,024 were no faster. A GPU wants larger products (its batch is larger
# too): 4,096 there, not measured on one yet.
CHUNK_POSITIONS = 256
CUDA_CHUNK_POSITIONS = 4096

# Model types whose causal-LM forward is `logits = lm_head(decoder(...))` followed by the shifted
# cross-entropy, with nothing in between (no soft-capping, no logit scale).
PLAIN_HEADS = frozenset({"gpt2", "llama", "mistral", "qwen2", "qwen3"})


@dataclass
class Head:
    decoder: torch.nn.Module  # input ids -> the final hidden states
    weight: torch.Tensor  # (vocabulary, width), the output layer's
    rows: torch.Tensor | None = None  # trained token rows replacing some of `weight`'s (peft's)
    index: torch.Tensor | None = None  # which rows of `weight` they replace


def head_of(model) -> Head | None:
    """The decoder and output weights of a causal LM (or of a peft model around one), or None."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(causal, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEADS or not hasattr(causal, "get_decoder"):
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    output = causal.get_output_embeddings()
    if isinstance(output, torch.nn.Linear) and output.bias is None:
        return Head(causal.get_decoder(), output.weight)
    return _token_rows_head(causal, output)


def _token_rows_head(causal, output) -> Head | None:
    """peft's trainable token rows over a plain output layer, with one active adapter."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    output = getattr(output, "token_adapter", output)  # peft's TrainableTokensWrapper holds the layer
    if not isinstance(output, TrainableTokensLayer) or output.disable_adapters or output.merged:
        return None
    base, adapters = output.base_layer, output.active_adapters
    if not isinstance(base, torch.nn.Linear) or base.bias is not None or len(adapters) != 1:
        return None
    index = cached_token_index(output, adapters[0], base.weight.device)  # not rebuilt every step
    return Head(causal.get_decoder(), base.weight, output.trainable_tokens_delta[adapters[0]], index)


def causal_lm_loss(
    model, batch: dict[str, torch.Tensor], dtype: torch.dtype | None, chunked: bool = True
) -> torch.Tensor:
    """Mean cross-entropy of each position's next token (the library's shifted loss, padding left out);
    `dtype` is the autocast dtype the products run in (None: the weights' own); `chunked=False` (or a
    head not known here) takes the library's own loss."""
    head = head_of(model) if chunked else None
    if head is None:
        return model(**batch).loss
    hidden = head.decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    targets = batch["labels"][:, 1:].reshape(-1)
    keep = targets != -100
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])[keep]
    return linear_cross_entropy(hidden, head, targets[keep], dtype or head.weight.dtype)


def linear_cross_entropy(
    hidden: torch.Tensor, head: Head, targets: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight^T` (with the token rows written in) against `targets`."""
    tensors = [t for t in (hidden, head.weight, head.rows) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _LinearCrossEntropy.apply(hidden, head.weight, head.rows, head.index, targets, dtype)
    with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
        return _chunked(hidden, head.weight, head.rows, head.index, targets, dtype, (False,) * 3)[0]


class _LinearCrossEntropy(torch.autograd.Function):
    """The loss, with its gradients computed on the way (no chunk's logits are kept for backward)."""

    @staticmethod
    def forward(ctx, hidden, weight, rows, index, targets, dtype):
        want = (hidden.requires_grad, weight.requires_grad, rows is not None and rows.requires_grad)
        with torch.autocast(hidden.device.type, enabled=False):
            loss, grads = _chunked(hidden, weight, rows, index, targets, dtype, want)
        ctx.save_for_backward(*[g if g is not None else torch.empty(0) for g in grads])
        ctx.present = [g is not None for g in grads]
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        saved = zip(ctx.saved_tensors, ctx.present, strict=True)
        grads = [g * grad_loss.to(g.dtype) if present else None for g, present in saved]
        return (*grads, None, None, None)


def _chunked(hidden, weight, rows, index, targets, dtype, want):
    """The loss and, where `want` asks, the gradients of hidden, weight and rows, chunk by chunk."""
    if want[1] and rows is not None:
        raise ValueError("trained token rows over trained output weights: not one of the known heads")
    matrix = _output_matrix(weight, rows, index, dtype)
    inputs = hidden.detach().to(dtype)
    count = max(1, targets.numel())
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if want[0] else None
    grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want[1] else None
    grad_rows = torch.zeros_like(rows, dtype=torch.float32) if want[2] else None
    chunk = CUDA_CHUNK_POSITIONS if hidden.device.type == "cuda" else CHUNK_POSITIONS
    # One pair of buffers for every chunk: on a CPU a fresh 50 MB tensor per chunk is memory the
    # system hands out page by page, which cost more than the passes over it.
    size = (min(chunk, targets.numel()), matrix.shape[0])
    scores = torch.empty(size, dtype=dtype, device=hidden.device)
    probs = torch.empty(size, dtype=torch.float32, device=hidden.device)
    for start in range(0, targets.numel(), chunk):
        part = slice(start, start + chunk)
        x, y = inputs[part], targets[part]
        logits, low = probs[: len(y)], scores[: len(y)]
        logits.copy_(torch.mm(x, matrix.T, out=low))
        picked = logits.gather(1, y[:, None])
        peak = logits.amax(dim=1, keepdim=True)
        sums = logits.sub_(peak).exp_().sum(dim=1, keepdim=True)  # logits now exp(logit - peak)
        total += (peak + sums.log() - picked).sum()
        if not any(want):
            continue
        # d(loss)/d(logits) = (softmax - one-hot) / count, written over the logits
        logits.div_(sums * count)
        logits[torch.arange(len(y), device=y.device), y] -= 1.0 / count
        grad = low.copy_(logits)
        if grad_hidden is not None:
            grad_hidden[part] = grad @ matrix
        if grad_weight is not None:
            grad_weight += (grad.T @ x).float()
        if grad_rows is not None:
            grad_rows += (grad[:, index].T @ x).float()
    pairs = zip((grad_hidden, grad_weight, grad_rows), (hidden, weight, rows), strict=True)
    return total / count, [g.to(t.dtype) if g is not None else None for g, t in pairs]


def _output_matrix(weight, rows, index, dtype):
    """The output weights in `dtype` with the token rows written in. A frozen weight (LoRA's) is cast
    once and kept with it: each step then writes only its rows in, instead of two copies of the
    whole vocabulary matrix (28 M numbers on SmolLM2) per step."""
    if weight.requires_grad or weight.dtype == dtype:  # trained, or used as it is: copy per step
        matrix = weight.detach().to(dtype)
        return matrix if rows is None else matrix.index_copy(0, index, rows.detach().to(dtype))
    key = (weight._version, weight.data_ptr(), dtype)
    kept = getattr(weight, "_chunked_loss_copy", None)
    if kept is None or kept["key"] != key:
        kept = {"key": key, "matrix": weight.detach().to(dtype), "rows": None}
        weight._chunked_loss_copy = kept
    matrix, written = kept["matrix"], kept["rows"]
    if written is not None and (rows is None or not torch.equal(written, index)):
        matrix.index_copy_(0, written, weight.detach()[written].to(dtype))  # the base's own rows back
        kept["rows"] = None
    if rows is not None:
        matrix.index_copy_(0, index, rows.detach().to(dtype))
        kept["rows"] = index
    return matrix
