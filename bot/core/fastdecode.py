"""Int8 decoding of GPT-2 on CPU, with per-row LoRA deltas, near the memory-bandwidth limit.

Sampling a few rows reads every weight once per token, so a step costs what reading the weights
costs. This decoder keeps GPT-2's matrices as int8 (per output channel scales) and runs them
through torch's quantized kernels (fbgemm or oneDNN, chosen from the CPU's instruction set by
`devices.int8_engine`), with a preallocated KV cache, `scaled_dot_product_attention`, and only
a few tensor operations per layer and step. A LoRA persona is its A/B matrices applied beside
the shared int8 base, one pair per row, so a batch that mixes personas stays one forward pass.

Only GPT-2 (`model_type == "gpt2"`) with plain LoRA adapters on its attention and MLP layers
takes this path; everything else (other architectures, DoRA, CUDA) uses the generic one.
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .devices import int8_engine

# The GPT-2 layers a LoRA adapter may adapt on this path, as peft names them.
_LORA_KEY = re.compile(r"\.h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.lora_([AB])\.weight$")
_KINDS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_PACK_LOCK = threading.Lock()  # the quantized engine is process-wide state while weights are packed


def supports(model_config) -> bool:
    return getattr(model_config, "model_type", None) == "gpt2" and int8_engine() is not None


def _pack(weight: torch.Tensor, bias: torch.Tensor | None, engine: str):
    """Int8 weights with one scale per output channel, packed for the engine's kernels."""
    weight = weight.detach().float().contiguous()
    scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao; the kernels stay
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
    bias = None if bias is None else bias.detach().float().contiguous()
    with _PACK_LOCK:
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = engine
        try:
            return torch.ops.quantized.linear_prepack(quantized, bias)
        finally:
            torch.backends.quantized.engine = previous


@dataclass
class RowLora:
    """Per-layer LoRA matrices for the rows of one batch: x @ A (B, in, r) @ B (B, r, out)."""

    down: dict[tuple[int, str], torch.Tensor]
    up: dict[tuple[int, str], torch.Tensor]


class LoraWeights:
    """One adapter's A and B (scale folded into B), read from its safetensors file."""

    def __init__(self, pairs: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]):
        self.pairs = pairs

    @classmethod
    def load(cls, folder: str | Path) -> LoraWeights | None:
        """None when the adapter is not a plain LoRA on GPT-2's attention and MLP layers."""
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = json.loads((folder / "adapter_config.json").read_text())
            tensors = load_file(folder / "adapter_model.safetensors")
        except (OSError, ValueError):
            return None
        if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora") \
                or config.get("modules_to_save") or config.get("rank_pattern") or config.get("alpha_pattern"):
            return None
        rank = int(config.get("r", 8))
        alpha = float(config.get("lora_alpha", rank))
        scale = alpha / (rank ** 0.5 if config.get("use_rslora") else rank)
        found: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            match = _LORA_KEY.search(key)
            if match is None:
                return None  # something else is adapted: the generic path handles it
            found.setdefault((int(match[1]), match[2]), {})[match[3]] = tensor.float()
        if not found or any(len(ab) != 2 for ab in found.values()):
            return None
        return cls({key: (ab["A"].t().contiguous(), (ab["B"] * scale).t().contiguous())
                    for key, ab in found.items()})


def stack_lora(adapters: list[LoraWeights | None]) -> RowLora | None:
    """Batch the adapters of each row (None: the bare base) into bmm operands; ranks are padded."""
    if all(a is None for a in adapters):
        return None
    keys = {k for a in adapters if a is not None for k in a.pairs}
    down, up = {}, {}
    for key in keys:
        pairs = [a.pairs.get(key) if a is not None else None for a in adapters]
        shape = next(p for p in pairs if p is not None)
        rank = max(p[0].shape[1] for p in pairs if p is not None)
        d = torch.zeros(len(pairs), shape[0].shape[0], rank)
        u = torch.zeros(len(pairs), rank, shape[1].shape[1])
        for row, pair in enumerate(pairs):
            if pair is not None:
                d[row, :, : pair[0].shape[1]] = pair[0]
                u[row, : pair[1].shape[0]] = pair[1]
        down[key], up[key] = d, u
    return RowLora(down, up)


class Int8GPT2:
    """GPT-2's forward pass for sampling: int8 matrices, KV cache, LoRA per row."""

    def __init__(self, model, engine: str | None = None):
        engine = engine or int8_engine()
        if engine is None:
            raise RuntimeError("no int8 kernels on this CPU")
        self.reduce_range = engine in ("fbgemm", "x86")  # 7-bit activations avoid fbgemm's int16 saturation
        config = model.config
        core = model.transformer
        self.heads = config.n_head
        self.width = config.n_embd
        self.eps = config.layer_norm_epsilon
        self.positions = config.n_positions
        self.wte = core.wte.weight.detach().float().clone()
        self.wpe = core.wpe.weight.detach().float().clone()
        self.layers = []
        for block in core.h:
            layer = {
                "ln_1": (block.ln_1.weight.detach().float(), block.ln_1.bias.detach().float()),
                "ln_2": (block.ln_2.weight.detach().float(), block.ln_2.bias.detach().float()),
            }
            for kind in _KINDS:  # Conv1D stores (in, out): the kernels want (out, in)
                module = block.get_submodule(kind)
                layer[kind] = _pack(module.weight.t(), module.bias, engine)
            self.layers.append(layer)
        self.ln_f = (core.ln_f.weight.detach().float(), core.ln_f.bias.detach().float())
        self.head = _pack(model.lm_head.weight, None, engine)

    def _linear(self, x: torch.Tensor, layer: int, kind: str, lora: RowLora | None) -> torch.Tensor:
        rows, length, _ = x.shape
        flat = x.reshape(rows * length, -1)
        y = torch.ops.quantized.linear_dynamic(flat, self.layers[layer][kind], self.reduce_range)
        y = y.view(rows, length, -1)
        if lora is not None and (layer, kind) in lora.down:
            y = y + torch.bmm(torch.bmm(x, lora.down[(layer, kind)]), lora.up[(layer, kind)])
        return y

    def new_cache(self, rows: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        shape = (rows, self.heads, length, self.width // self.heads)
        return [(torch.empty(shape), torch.empty(shape)) for _ in self.layers]

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, cache, start: int, mask: torch.Tensor,
                lora: RowLora | None, *, last_only: bool = True) -> torch.Tensor:
        """Logits of the last position (or all) for `ids` (rows, length) written at cache slots start..."""
        rows, length = ids.shape
        heads, width = self.heads, self.width
        x = self.wte[ids] + self.wpe[positions]
        end = start + length
        for index, layer in enumerate(self.layers):
            h = F.layer_norm(x, (width,), *layer["ln_1"], self.eps)
            qkv = self._linear(h, index, "attn.c_attn", lora).view(rows, length, 3, heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            keys, values = cache[index]
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            attended = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=mask)
            attended = attended.transpose(1, 2).reshape(rows, length, width)
            x = x + self._linear(attended, index, "attn.c_proj", lora)
            h = F.layer_norm(x, (width,), *layer["ln_2"], self.eps)
            h = F.gelu(self._linear(h, index, "mlp.c_fc", lora), approximate="tanh")
            x = x + self._linear(h, index, "mlp.c_proj", lora)
        x = x[:, -1] if last_only else x.reshape(rows * length, width)
        last = F.layer_norm(x, (width,), *self.ln_f, self.eps)
        logits = torch.ops.quantized.linear_dynamic(last, self.head, self.reduce_range)
        return logits if last_only else logits.view(rows, length, -1)

    def logits_of(self, ids: torch.Tensor, lora: RowLora | None = None) -> torch.Tensor:
        """Logits at every position of unpadded `ids` (for perplexity checks)."""
        rows, length = ids.shape
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        positions = torch.arange(length).expand(rows, length)
        cache = self.new_cache(rows, length)
        return self.forward(ids, positions, cache, 0, causal[None, None], lora, last_only=False)


@torch.inference_mode()
def sample_int8(decoder: Int8GPT2, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling, *,
                stop_ids: torch.Tensor, eos_id: int, lora: RowLora | None = None) -> torch.Tensor:
    """`generation.sample_tokens` on the int8 decoder: same stopping and sampling rules.

    Prompt plus new tokens never go past the model's position limit: the prompt keeps its last
    tokens and fewer new tokens are sampled when they would.
    """
    from .generation import top_p_sample

    keep = max(1, decoder.positions - max(1, sampling.min_new_tokens))
    input_ids, attention_mask = input_ids[:, -keep:], attention_mask[:, -keep:].bool()
    rows, length = input_ids.shape
    new_tokens = max(1, min(sampling.max_new_tokens, decoder.positions - length))
    total = length + new_tokens
    cache = decoder.new_cache(rows, total)
    key_ok = torch.ones(rows, total, dtype=torch.bool)
    key_ok[:, :length] = attention_mask
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    # A left-pad query may see itself, so no attention row is empty (its output is never used).
    prefill_mask = (causal & key_ok[:, None, :length]) | torch.eye(length, dtype=torch.bool)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = decoder.forward(input_ids, positions, cache, 0, prefill_mask[:, None], lora)
    position = positions[:, -1:]
    done = torch.zeros(rows, dtype=torch.bool)
    out = []
    for step in range(new_tokens):
        if step < sampling.min_new_tokens:
            logits[:, stop_ids] = float("-inf")
        if sampling.temperature != 1.0:
            logits = logits / sampling.temperature
        token = torch.where(done, eos_id, top_p_sample(logits, sampling.top_p))
        out.append(token)
        done |= torch.isin(token, stop_ids)
        if step + 1 == new_tokens or bool(done.all()):
            break
        position = position + 1
        slot = length + step
        mask = key_ok[:, None, None, : slot + 1]
        logits = decoder.forward(token[:, None], position, cache, slot, mask, lora)
    return torch.stack(out, dim=1)
