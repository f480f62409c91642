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

from bot.core.devices import int8_engine

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
    """The trained token rows of one batch's distinct adapters, and which rows use which.

    `table` holds every distinct adapter's rows side by side, transposed (width, total K), so one
    matrix product gives each row its own tokens' logits; `slot[a, t]` is token t's column in the
    table for adapter a (-1: the base's row stands; the last adapter index is "no token rows");
    `adapter[r]` is row r's adapter index. `ids[r, j]`/`cols[r, j]` are the tokens whose logits row
    r replaces and their columns (padded by repeating the first); `keep` is False for rows whose
    persona has no token rows (their logits stay the base's), None when every row has them.
    """

    table: torch.Tensor  # (width, total K)
    slot: torch.Tensor  # (adapters + 1, vocab) long
    adapter: torch.Tensor  # (B,) long
    ids: torch.Tensor  # (B, Kmax) long
    cols: torch.Tensor  # (B, Kmax) long
    keep: torch.Tensor | None  # (B, Kmax) bool


@dataclass
class RowLora:
    """The LoRA matrices of one batch's distinct adapters, side by side, and which rows use which.

    For a layer, `down` is the adapters' A matrices side by side (in, total rank) and `up` their
    B matrices, scale folded in, stacked (total rank, out); `select` (B, total rank) has ones in
    each row's own adapter's columns, or is None when every row uses the one adapter. So
    `((x @ down) * select) @ up` is every row's own delta: two matrix products for any mix of
    personas, each adapter's weights read once per step.
    """

    down: dict[tuple[int, str], torch.Tensor]
    up: dict[tuple[int, str], torch.Tensor]
    select: dict[tuple[int, str], torch.Tensor | None]
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


def _distinct(adapters: list[LoraWeights | None]) -> tuple[list[LoraWeights], list[int]]:
    """The distinct adapters of a batch, and each row's index among them (-1: the bare base)."""
    distinct: list[LoraWeights] = []
    index: dict[int, int] = {}
    for adapter in adapters:
        if adapter is not None and id(adapter) not in index:
            index[id(adapter)] = len(distinct)
            distinct.append(adapter)
    return distinct, [-1 if a is None else index[id(a)] for a in adapters]


def stack_token_rows(adapters: list[LoraWeights | None], vocab: int) -> TokenRows | None:
    """The batch's token rows (None: no row has any), each distinct adapter's rows stored once."""
    distinct, row_of = _distinct(adapters)
    owners = [a for a in distinct if a.token_ids is not None]
    if not owners:
        return None
    slot = torch.full((len(owners) + 1, vocab), -1, dtype=torch.long)
    offsets, offset = {}, 0
    for number, adapter in enumerate(owners):
        size = adapter.token_ids.shape[0]
        slot[number, adapter.token_ids] = torch.arange(offset, offset + size)
        offsets[id(adapter)] = (number, offset)
        offset += size
    longest = max(a.token_ids.shape[0] for a in owners)
    ids = torch.zeros(len(adapters), longest, dtype=torch.long)
    cols = torch.zeros(len(adapters), longest, dtype=torch.long)
    keep = torch.zeros(len(adapters), longest, dtype=torch.bool)
    adapter_of = torch.full((len(adapters),), len(owners), dtype=torch.long)
    for row, index in enumerate(row_of):
        adapter = distinct[index] if index >= 0 else None
        if adapter is None or adapter.token_ids is None:
            continue
        number, start = offsets[id(adapter)]
        size = adapter.token_ids.shape[0]
        adapter_of[row], keep[row] = number, True
        # Padding repeats the first token and column: a scatter of equal values to one index is safe.
        ids[row], cols[row] = adapter.token_ids[0], start
        ids[row, :size], cols[row, :size] = adapter.token_ids, torch.arange(start, start + size)
    table = torch.cat([a.token_rows for a in owners]).t().contiguous()
    return TokenRows(table, slot, adapter_of, ids, cols, None if bool(keep.all()) else keep)


def _side_by_side(parts: list[tuple[int, torch.Tensor, torch.Tensor]], row_of: list[int]):
    """One layer's (down, up, select) from the (adapter index, A, B) of the adapters that adapt it."""
    if len(parts) == 1 and all(index == parts[0][0] for index in row_of):
        return parts[0][1], parts[0][2], None  # every row, one adapter: no copy, no mask
    down = torch.cat([a for _, a, _ in parts], dim=1)
    up = torch.cat([b for _, _, b in parts], dim=0)
    select = torch.zeros(len(row_of), down.shape[1])
    start, columns = 0, {}
    for index, a, _ in parts:
        columns[index] = (start, start + a.shape[1])
        start += a.shape[1]
    for row, index in enumerate(row_of):
        if index in columns:
            select[row, slice(*columns[index])] = 1.0
    return down, up, select


def stack_lora(adapters: list[LoraWeights | None], vocab: int | None = None) -> RowLora | None:
    """The LoRA operands of a batch whose row r uses `adapters[r]` (None: the bare base).

    `vocab` (the decoder's vocabulary size) is needed where an adapter has token rows.
    """
    distinct, row_of = _distinct(adapters)
    if not distinct:
        return None
    down, up, select = {}, {}, {}
    for key in sorted({k for a in distinct for k in a.pairs}):
        parts = [(i, *a.pairs[key]) for i, a in enumerate(distinct) if key in a.pairs]
        down[key], up[key], select[key] = _side_by_side(parts, row_of)
    tokens = None
    if any(a.token_ids is not None for a in distinct):
        if vocab is None:
            raise ValueError("stack_lora needs the vocabulary size for adapters with token rows")
        tokens = stack_token_rows(adapters, vocab)
    return RowLora(down, up, select, tokens)


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
        """x (rows * length, in) through one int8 matrix, plus each row's LoRA delta."""
        y = torch.ops.quantized.linear_dynamic(x, self.layers[layer][kind], self.reduce_range)
        down = None if lora is None else lora.down.get((layer, kind))
        if down is None:
            return y
        low = x @ down
        select = lora.select[(layer, kind)]
        if select is not None:  # rows of several personas: each keeps its own adapter's columns
            low.view(select.shape[0], -1, low.shape[1]).mul_(select[:, None])
        return y.addmm_(low, lora.up[(layer, kind)])

    def new_cache(self, rows: int, length: int) -> list[torch.Tensor]:
        """Per layer, keys and values in one tensor (2, rows, heads, length, head width): one write a step."""
        shape = (2, rows, self.heads, length, self.width // self.heads)
        return [torch.empty(shape) for _ in self.layers]

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        cache,
        start: int,
        mask: torch.Tensor | None,
        lora: RowLora | None,
        *,
        last_only: bool = True,
    ) -> torch.Tensor:
        """Logits of the last position (or all) for `ids` (rows, length) written at cache slots start...

        `mask` (rows, 1, length, keys) says which keys each query sees; None: all of them (a step
        of one token when no row is padded, the common case, takes attention's unmasked kernel).
        """
        rows, length = ids.shape
        width, eps = self.width, self.eps
        x = (self._embed(ids, lora) + self.wpe[positions]).view(rows * length, width)
        for index, layer in enumerate(self.layers):
            h = F.layer_norm(x, (width,), *layer["ln_1"], eps)
            qkv = self._linear(h, index, "attn.c_attn", lora)
            attended = self._attend(qkv, cache[index], rows, start, mask)
            x += self._linear(attended, index, "attn.c_proj", lora)
            h = F.layer_norm(x, (width,), *layer["ln_2"], eps)
            h = F.gelu(self._linear(h, index, "mlp.c_fc", lora), approximate="tanh")
            x += self._linear(h, index, "mlp.c_proj", lora)
        x = x.view(rows, length, width)
        last = F.layer_norm(x[:, -1] if last_only else x, (width,), *self.ln_f, eps)
        flat = last.reshape(-1, width)
        logits = torch.ops.quantized.linear_dynamic(flat, self.head, self.reduce_range)
        self._token_logits(flat, logits, lora, rows)
        return logits if last_only else logits.view(rows, length, -1)

    def _attend(self, qkv: torch.Tensor, layer_cache, rows: int, start: int, mask) -> torch.Tensor:
        """Attention of the new positions over the cache, after writing their keys and values into it."""
        length = qkv.shape[0] // rows
        qkv = qkv.view(rows, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (3, rows, heads, length, -1)
        end = start + length
        layer_cache[:, :, :, start:end] = qkv[1:]
        keys, values = layer_cache[:, :, :, :end]
        attended = F.scaled_dot_product_attention(qkv[0], keys, values, attn_mask=mask)
        return attended.transpose(1, 2).reshape(rows * length, self.width)

    def _embed(self, ids: torch.Tensor, lora: RowLora | None) -> torch.Tensor:
        """Input embeddings, each row's token rows in place of the base's for the tokens it trained."""
        x = self.wte[ids]
        tokens = None if lora is None else lora.tokens
        if tokens is None:
            return x
        slot = tokens.slot[tokens.adapter[:, None], ids]  # (rows, length): -1 where the base's row stands
        own = tokens.table.t()[slot.clamp(min=0)]
        return torch.where(slot[..., None] >= 0, own, x)

    def _token_logits(
        self, last: torch.Tensor, logits: torch.Tensor, lora: RowLora | None, rows: int
    ) -> None:
        """With a tied output layer, a trained token's logit is h . its row (not h . the base's row).

        `last` (rows * positions, width) and `logits` (rows * positions, vocab), changed in place.
        """
        tokens = None if lora is None else lora.tokens
        if tokens is None or not self.tied:
            return
        ids, cols, keep = tokens.ids, tokens.cols, tokens.keep
        if last.shape[0] != rows:  # several positions per row
            repeat = last.shape[0] // rows
            ids, cols = ids.repeat_interleave(repeat, 0), cols.repeat_interleave(repeat, 0)
            keep = None if keep is None else keep.repeat_interleave(repeat, 0)
        own = (last @ tokens.table).gather(1, cols)
        if keep is not None:  # rows without token rows keep the base's logits
            own = torch.where(keep, own, logits.gather(1, ids))
        logits.scatter_(1, ids, own)

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
