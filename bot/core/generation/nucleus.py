"""Nucleus (top-p) sampling, exact, without sorting or scanning the whole vocabulary twice.

On a small CPU, `sort` or `topk` over GPT-2's 50k logits per row costs as much as a transformer
layer, and so does any elementwise pass that yields booleans or indices. Reductions are cheap.
So: the probabilities (one softmax), the largest probability of each block of 64 tokens (one
reduction), and only the blocks that can hold nucleus tokens are looked at token by token.

Why it is exact: the nucleus (the fewest most-likely tokens holding top_p of the mass) lies
within {p >= t} for any t whose tokens hold at least top_p together. Every such token sits in a
block whose largest probability is >= t, so gathering those blocks, keeping p >= t and checking
the mass finds it; sorting that small set gives the same nucleus as sorting everything. A row
where the first t does not hold enough mass falls back to t = (1 - top_p) / vocab, which always
does (the tokens below it hold less than 1 - top_p together).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

BLOCK = 64
FIRST_TRY = 64  # the first threshold is (1 - top_p) / FIRST_TRY: at most FIRST_TRY / (1 - top_p) tokens


def sample_step(
    logits: torch.Tensor, sampling, step: int, stop_ids: torch.Tensor, done: torch.Tensor, eos_id: int
) -> torch.Tensor:
    """One decoding step's tokens, the same on every path (generic, int8): no stop before
    `min_new_tokens`, the temperature, the nucleus; a finished row gets end-of-text."""
    logits = logits.float()
    if step < sampling.min_new_tokens:
        logits[:, stop_ids] = float("-inf")
    if sampling.temperature != 1.0:
        logits = logits / sampling.temperature
    return torch.where(done, eos_id, top_p_sample(logits, sampling.top_p))


def fit_to_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Prompt plus new tokens within the model's positions (past them GPT-2 fails with IndexError),
    by one rule for every decoding path, so a long prompt gives the same answer length on any CPU.

    When they do not fit, the prompt keeps up to half the positions (its end: the text continues
    from there; clean-up still puts the whole prompt in front), the new tokens get the rest.
    """
    prompt_len = input_ids.shape[1]
    if limit is None or limit < 2 or prompt_len + sampling.max_new_tokens <= limit:
        return input_ids, attention_mask, sampling
    new = min(sampling.max_new_tokens, limit - max(1, min(prompt_len, limit // 2)))
    keep = limit - new
    sampling = replace(sampling, max_new_tokens=new, min_new_tokens=min(sampling.min_new_tokens, new))
    return input_ids[:, -keep:], attention_mask[:, -keep:], sampling


def top_p_sample(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """One token per row of `logits` (rows, vocab), drawn from that row's nucleus."""
    probs = torch.softmax(logits.float(), dim=-1)
    if top_p >= 1.0:
        return torch.multinomial(probs, 1).squeeze(-1)
    threshold = torch.full((probs.shape[0], 1), (1.0 - top_p) / FIRST_TRY, device=probs.device)
    values, ids = _candidates(probs, threshold)
    short = values.sum(-1, keepdim=True) < top_p
    if bool(short.any()):  # flat distributions: those rows take the threshold that always holds enough
        threshold[short] = (1.0 - top_p) / probs.shape[-1]
        values, ids = _candidates(probs, threshold)
    return _draw(values, ids, top_p)


def _candidates(probs: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's tokens of probability >= its threshold (rows, 1), as (values, ids) padded with zeros."""
    rows, vocab = probs.shape
    blocks = F.pad(probs, (0, -vocab % BLOCK)).view(rows, -1, BLOCK)
    row_of, block = (blocks.amax(-1) >= threshold).nonzero(as_tuple=True)  # row-major order
    values = blocks[row_of, block]  # (blocks kept, BLOCK)
    ids = block[:, None] * BLOCK + torch.arange(BLOCK, device=probs.device)
    keep = values >= threshold[row_of]
    row_of = row_of[:, None].expand_as(keep)[keep]
    counts = torch.bincount(row_of, minlength=rows)
    place = torch.arange(row_of.shape[0], device=probs.device) - (counts.cumsum(0) - counts)[row_of]
    padded = probs.new_zeros(rows, max(1, int(counts.max())))
    padded_ids = torch.zeros(padded.shape, dtype=torch.long, device=probs.device)
    padded[row_of, place], padded_ids[row_of, place] = values[keep], ids[keep]
    return padded, padded_ids


def _draw(values: torch.Tensor, ids: torch.Tensor, top_p: float) -> torch.Tensor:
    """Sort each row's candidates, keep its nucleus, draw from it."""
    values, order = values.sort(dim=-1, descending=True)
    before = values.cumsum(-1) - values
    values = values.masked_fill(before >= top_p, 0.0)  # outside the nucleus
    choice = torch.multinomial(values, 1)
    return ids.gather(-1, order.gather(-1, choice)).squeeze(-1)
