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
# Trained token rows (peft's trainable_token_indices) of the input embedding, tied to the output layer.
_TOKEN_KEY = re.compile(r"\.transformer\.wte\.token_adapter\.trainable_tokens_delta$")
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
class TokenRows:
    """Per-row token rows of one batch: row r's token `ids[r, j]` has embedding `rows[r, j]`.

    `slot[r, t]` is j for a token t with its own row in row r (else -1), for the input embedding;
    `valid` is False for the rows of a persona without token rows (their logits stay the base's).
    """

    slot: torch.Tensor  # (B, vocab) long
    ids: torch.Tensor  # (B, K) long
    rows: torch.Tensor  # (B, K, width)
    valid: torch.Tensor  # (B, K) bool


@dataclass
class RowLora:
    """Per-layer LoRA matrices for the rows of one batch: x @ A (B, in, r) @ B (B, r, out)."""

    down: dict[tuple[int, str], torch.Tensor]
    up: dict[tuple[int, str], torch.Tensor]
    tokens: TokenRows | None = None


class LoraWeights:
    """One adapter's A and B (scale folded into B), and its trained token rows, from its safetensors file."""

    def __init__(
        self,
        pairs: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]],
        token_ids: torch.Tensor | None = None,
        token_rows: torch.Tensor | None = None,
    ):
        self.pairs = pairs
        self.token_ids = token_ids  # (K,) the tokens with their own embedding row, or None
        self.token_rows = token_rows  # (K, width) their rows (input embedding and tied output layer)

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
        if (
            config.get("peft_type", "LORA") != "LORA"
            or config.get("use_dora")
            or config.get("modules_to_save")
            or config.get("rank_pattern")
            or config.get("alpha_pattern")
        ):
            return None
        rank = int(config.get("r", 8))
        alpha = float(config.get("lora_alpha", rank))
        scale = alpha / (rank**0.5 if config.get("use_rslora") else rank)
        found: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        token_rows = None
        for key, tensor in tensors.items():
            match = _LORA_KEY.search(key)
            if match is not None:
                found.setdefault((int(match[1]), match[2]), {})[match[3]] = tensor.float()
            elif _TOKEN_KEY.search(key) and token_rows is None:
                token_rows = tensor.float().contiguous()
            else:
                return None  # something else is adapted: the generic path handles it
        if not found or any(len(ab) != 2 for ab in found.values()):
            return None
        token_ids = _token_indices(config.get("trainable_token_indices"))
        if (token_rows is None) != (token_ids is None) or (
            token_ids is not None and token_ids.shape[0] != token_rows.shape[0]
        ):
            return None
        return cls(
            {
                key: (ab["A"].t().contiguous(), (ab["B"] * scale).t().contiguous())
                for key, ab in found.items()
            },
            token_ids,
            token_rows,
        )


def _token_indices(indices) -> torch.Tensor | None:
    """The token ids of peft's `trainable_token_indices` (a list, or {"wte": list} for GPT-2)."""
    if isinstance(indices, dict):
        indices = indices.get("wte") if set(indices) == {"wte"} else None
    return torch.tensor(indices, dtype=torch.long) if indices else None


def stack_token_rows(adapters: list[LoraWeights | None], vocab: int) -> TokenRows | None:
    """Each row's token rows, padded to the batch's longest set (None: no row has any)."""
    with_rows = [a for a in adapters if a is not None and a.token_ids is not None]
    if not with_rows:
        return None
    longest = max(a.token_ids.shape[0] for a in with_rows)
    width = with_rows[0].token_rows.shape[1]
    count = len(adapters)
    slot = torch.full((count, vocab), -1, dtype=torch.long)
    ids = torch.zeros(count, longest, dtype=torch.long)
    rows = torch.zeros(count, longest, width)
    valid = torch.zeros(count, longest, dtype=torch.bool)
    for row, adapter in enumerate(adapters):
        if adapter is None or adapter.token_ids is None:
            continue
        size = adapter.token_ids.shape[0]
        slot[row, adapter.token_ids] = torch.arange(size)
        ids[row, :size], rows[row, :size], valid[row] = adapter.token_ids, adapter.token_rows, True
        # Padding repeats the first token and its row: a scatter of equal values to one index is safe.
        ids[row, size:], rows[row, size:] = adapter.token_ids[0], adapter.token_rows[0]
    return TokenRows(slot, ids, rows, valid)


def stack_lora(adapters: list[LoraWeights | None], vocab: int | None = None) -> RowLora | None:
    """Batch the adapters of each row (None: the bare base) into bmm operands; ranks are padded.

    `vocab` (the decoder's vocabulary size) is needed where an adapter has token rows.
    """
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
    tokens = None
    if any(a is not None and a.token_ids is not None for a in adapters):
        if vocab is None:
            raise ValueError("stack_lora needs the vocabulary size for adapters with token rows")
        tokens = stack_token_rows(adapters, vocab)
    return RowLora(down, up, tokens)


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
        self.vocab = self.wte.shape[0]
        self.tied = model.lm_head.weight is core.wte.weight  # token rows then also set their logits
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

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        cache,
        start: int,
        mask: torch.Tensor,
        lora: RowLora | None,
        *,
        last_only: bool = True,
    ) -> torch.Tensor:
        """Logits of the last position (or all) for `ids` (rows, length) written at cache slots start..."""
        rows, length = ids.shape
        heads, width = self.heads, self.width
        x = self._embed(ids, lora) + self.wpe[positions]
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
        x = x[:, -1:] if last_only else x
        last = F.layer_norm(x, (width,), *self.ln_f, self.eps)
        logits = torch.ops.quantized.linear_dynamic(last.reshape(-1, width), self.head, self.reduce_range)
        logits = self._token_logits(last, logits.view(rows, last.shape[1], -1), lora)
        return logits[:, -1] if last_only else logits

    def _embed(self, ids: torch.Tensor, lora: RowLora | None) -> torch.Tensor:
        """Input embeddings, each row's token rows in place of the base's for the tokens it trained."""
        x = self.wte[ids]
        tokens = None if lora is None else lora.tokens
        if tokens is None:
            return x
        slot = tokens.slot.gather(1, ids)  # (rows, length): -1 where the base's row stands
        own = tokens.rows.gather(1, slot.clamp(min=0)[..., None].expand(-1, -1, x.shape[-1]))
        return torch.where(slot[..., None] >= 0, own, x)

    def _token_logits(self, last: torch.Tensor, logits: torch.Tensor, lora: RowLora | None) -> torch.Tensor:
        """With a tied output layer, a trained token's logit is h . its row (not h . the base's row)."""
        tokens = None if lora is None else lora.tokens
        if tokens is None or not self.tied:
            return logits
        own = torch.bmm(last, tokens.rows.transpose(1, 2))  # (rows, length, K)
        index = tokens.ids[:, None].expand(-1, last.shape[1], -1)
        own = torch.where(tokens.valid[:, None], own, logits.gather(2, index))  # no rows: base logits
        return logits.scatter(2, index, own)

    def logits_of(self, ids: torch.Tensor, lora: RowLora | None = None) -> torch.Tensor:
        """Logits at every position of unpadded `ids` (for perplexity checks)."""
        rows, length = ids.shape
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        positions = torch.arange(length).expand(rows, length)
        cache = self.new_cache(rows, length)
        return self.forward(ids, positions, cache, 0, causal[None, None], lora, last_only=False)


@torch.inference_mode()
def sample_int8(
    decoder: Int8GPT2,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sampling,
    *,
    stop_ids: torch.Tensor,
    eos_id: int,
    lora: RowLora | None = None,
) -> torch.Tensor:
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
