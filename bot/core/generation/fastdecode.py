"""Int8 decoding on CPU, with per-row LoRA deltas, near the memory-bandwidth limit.

Sampling a few rows reads every weight once per token, so a step costs what reading the weights
costs. These decoders keep a model's matrices as int8 (per output channel scales) and run them
through torch's quantized kernels (fbgemm or oneDNN, chosen from the CPU's instruction set by
`devices.int8_engine`), with a preallocated KV cache, `scaled_dot_product_attention`, and only
a few tensor operations per layer and step. A LoRA persona is its A/B matrices applied beside
the shared int8 base, one pair per row, so a batch that mixes personas stays one forward pass.

GPT-2 (int8_gpt2) and the Llama family (int8_llama: Llama, SmolLM2, Qwen2) take this path, with
plain LoRA adapters of their blocks' linear layers and trained token rows; everything else (other
architectures, DoRA, CUDA) uses the generic one (`decoding.sample_tokens`).
"""

from __future__ import annotations

import torch

from bot.core.devices import int8_engine
from bot.core.generation import int8_gpt2, int8_llama
from bot.core.generation.int8_gpt2 import Int8GPT2
from bot.core.generation.int8_llama import Int8Llama
from bot.core.generation.int8ops import (
    Int8Decoder,
    LoraWeights,
    RowLora,
    TokenRows,
    stack_lora,
    stack_token_rows,
)

__all__ = [
    "Int8Decoder",
    "Int8GPT2",
    "Int8Llama",
    "LoraWeights",
    "RowLora",
    "TokenRows",
    "build",
    "int8_engine",
    "sample_int8",
    "stack_lora",
    "stack_token_rows",
    "supports",
]


def supports(model_config) -> bool:
    """Whether this architecture has an int8 decoder and this CPU the kernels for it."""
    known = int8_gpt2.supports(model_config) or int8_llama.supports(model_config)
    return known and int8_engine() is not None


def build(model, engine: str | None = None) -> Int8Decoder:
    """The int8 decoder of a float model whose config `supports` accepts."""
    if int8_gpt2.supports(model.config):
        return Int8GPT2(model, engine)
    return Int8Llama(model, engine)


@torch.inference_mode()
def sample_int8(
    decoder: Int8Decoder,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sampling,
    *,
    stop_ids: torch.Tensor,
    eos_id: int,
    lora: RowLora | None = None,
) -> torch.Tensor:
    """`generation.sample_tokens` on the int8 decoder: the same step (`nucleus.sample_step`) and
    the same rule for a prompt too long for the positions (`nucleus.fit_to_positions`)."""
    from bot.core.generation.nucleus import fit_to_positions, sample_step

    input_ids, attention_mask, sampling = fit_to_positions(
        input_ids, attention_mask, sampling, decoder.positions
    )
    attention_mask = attention_mask.bool()
    rows, length = input_ids.shape
    new_tokens = max(1, min(sampling.max_new_tokens, decoder.positions - length))
    total = length + new_tokens
    cache = decoder.new_cache(rows, total)
    key_ok = torch.ones(rows, total, dtype=torch.bool)
    key_ok[:, :length] = attention_mask
    padded = not bool(attention_mask.all())  # else no step needs an attention mask
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    # A left-pad query may see itself, so no attention row is empty (its output is never used).
    prefill_mask = (causal & key_ok[:, None, :length]) | torch.eye(length, dtype=torch.bool)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    prefill_mask = prefill_mask[:, None] if padded or length > 1 else None
    logits = decoder.forward(input_ids, positions, cache, 0, prefill_mask, lora)
    position = positions[:, -1:]
    done = torch.zeros(rows, dtype=torch.bool)
    out = []
    for step in range(new_tokens):
        token = sample_step(logits, sampling, step, stop_ids, done, eos_id)
        out.append(token)
        done |= torch.isin(token, stop_ids)
        if step + 1 == new_tokens or bool(done.all()):
            break
        position = position + 1
        slot = length + step
        mask = key_ok[:, None, None, : slot + 1] if padded else None
        logits = decoder.forward(token[:, None], position, cache, slot, mask, lora)
    return torch.stack(out, dim=1)


def takes(path: str) -> bool:
    """Whether the model at `path` (a full model, or a LoRA persona on its base) would sample on an
    int8 decoder, read from its config files without loading its weights."""
    import json
    from pathlib import Path

    from transformers import AutoConfig

    if int8_engine() is None:
        return False
    adapter_config = Path(path) / "adapter_config.json"
    try:
        if not adapter_config.is_file():
            return supports(AutoConfig.from_pretrained(path, local_files_only=True))
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path") or "gpt2"
        # Local files only: /models info must answer within Discord's 3 s, never wait on the hub.
        config = AutoConfig.from_pretrained(base, local_files_only=True)
    except (OSError, ValueError):  # unreadable, or a hub base that cannot be reached
        return False
    lora = LoraWeights.load(path)
    if lora is None or not supports(config):
        return False
    known = int8_gpt2.LAYERS if int8_gpt2.supports(config) else int8_llama.LAYERS
    return all(name in known for _, name in lora.pairs)
