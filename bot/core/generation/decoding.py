"""The generic decoding loop (any causal LM transformers can run): sampling settings, where a
post stops (end-of-text or a newline, whatever the vocabulary), and the step-by-step loop with a
KV cache. The int8 engine (fastdecode) runs its own loop over the same sampling step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bot.core.generation.nucleus import sample_step


@dataclass(frozen=True)
class Sampling:
    top_p: float = 0.95
    temperature: float = 1.0
    max_new_tokens: int = 160
    min_new_tokens: int = 10


def sampling_from(settings) -> Sampling:
    """The sampling every persona post uses (/impersonate, autoposts, answers, the voice report)."""
    return Sampling(
        top_p=settings.generation_top_p,
        temperature=settings.generation_temperature,
        max_new_tokens=settings.generation_max_new_tokens,
        min_new_tokens=settings.generation_min_new_tokens,
    )


def position_limit(model_config) -> int | None:
    """How many positions the model has (GPT-2: n_positions; others: max_position_embeddings)."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def sample_tokens(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sampling: Sampling,
    *,
    stop_ids: torch.Tensor,
    eos_id: int,
    extra: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Sample continuations with a KV cache, stopping each row at end-of-text or a newline.

    A plain loop over `model(...)`: `generate()`'s generality costs time per step, and a tweet
    ends at its first newline, so rows stop there instead of writing text that is cut anyway.
    Returns the new tokens; finished rows are padded with end-of-text.
    """
    extra = extra or {}
    rows = input_ids.shape[0]
    device = input_ids.device
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    stop_ids = stop_ids.to(device)
    new_tokens: list[torch.Tensor] = []
    past = None
    current, positions, mask = input_ids, position_ids, attention_mask
    for step in range(sampling.max_new_tokens):
        output = model(
            input_ids=current,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        past = output.past_key_values
        token = sample_step(output.logits[:, -1, :], sampling, step, stop_ids, done, eos_id)
        new_tokens.append(token)
        done |= torch.isin(token, stop_ids)
        if bool(done.all()):
            break
        current = token[:, None]
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=1)
    return torch.stack(new_tokens, dim=1)


def newline_pieces(tokenizer) -> set[str]:
    """How this vocabulary writes a newline: "Ċ" (byte-level BPE), "<0x0A>" (SentencePiece byte
    fallback), or the character itself; found by encoding one, so any tokenizer works."""
    ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    pieces = {
        piece
        for i, piece in zip(ids, tokenizer.convert_ids_to_tokens(ids), strict=True)
        if piece and "\n" in tokenizer.decode([i])
    }
    return pieces | {"\n"}


def stop_token_ids(tokenizer) -> torch.Tensor:
    """End-of-text plus every token that contains a newline (where a tweet is cut)."""
    marks = newline_pieces(tokenizer)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    newline = {i for i, t in enumerate(vocab) if t and any(mark in t for mark in marks)}
    return torch.tensor(sorted(newline | {tokenizer.eos_token_id}), dtype=torch.long)
