"""What the int8 decoders share: int8 matrices packed for torch's quantized kernels, a persona's LoRA
weights and token rows read from its adapter file, and the per-row operands that let one forward
pass serve a batch mixing personas (`stack_lora`). `Int8Decoder` holds the steps every
architecture takes the same way: a matrix with each row's LoRA delta, the input embedding and the
output logits with each row's token rows. The architectures are in int8_gpt2 and int8_llama."""

from __future__ import annotations

import json
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from bot.core.devices import int8_engine

# Input channels of each int8 matrix kept in float: the largest ones seen in calibration. Measured on
# SmolLM2-135M over 200 held-out tweets, a whole-sequence pass: perplexity 3.07x the float model's
# with none and per-tensor activations, 1.13x with 16 channels of the MLP's output projection and of
# the output layer plus activations quantized row by row, 1.04x with 16 channels of every matrix.
OUTLIER_CHANNELS = 16
# A LoRA matrix of a block's layer as peft names it: GPT-2's blocks are `h.N`, Llama's `layers.N`;
# the layer's name inside its block (`attn.c_attn`, `self_attn.q_proj`) is what a decoder maps.
_LORA_KEY = re.compile(r"\.(?:h|layers)\.(\d+)\.([\w.]+?)\.lora_([AB])\.weight$")
# Trained token rows (peft's trainable_token_indices) of the input embedding.
_TOKEN_KEY = re.compile(r"\.(?:wte|embed_tokens)\.token_adapter\.trainable_tokens_delta$")
_PACK_LOCK = threading.Lock()  # the quantized engine is process-wide state while weights are packed


def _pack(weight: torch.Tensor, engine: str):
    """Int8 weights with one scale per output channel, packed for the engine's kernels."""
    weight = weight.detach().float().contiguous()
    scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao; the kernels stay
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
    with _PACK_LOCK:
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = engine
        try:
            return torch.ops.quantized.linear_prepack(quantized, None)
        finally:
            torch.backends.quantized.engine = previous


@dataclass
class Int8Matrix:
    """One layer's weights for the int8 kernels, its bias, and the input channels kept in float.

    Real models carry a few input channels hundreds of times larger than the rest (the "massive
    activations" of the MLP's output projection, measured on SmolLM2: up to 6,600x the median).
    Quantized with the others they leave the rest a handful of int8 steps; here those channels
    are zeroed before quantizing and their product added in float (`outliers`: their indices and
    the weight columns, (K, out)).
    """

    packed: object
    bias: torch.Tensor | None
    outliers: tuple[torch.Tensor, torch.Tensor] | None = None


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
        """None when the adapter is not a plain LoRA of its blocks' linear layers (the decoder then
        says, in `adapt`, whether it knows those layers)."""
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
    """The token ids of peft's `trainable_token_indices` (a list, or {embedding's name: list})."""
    if isinstance(indices, dict):
        indices = next(iter(indices.values())) if len(indices) == 1 else None
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


class Int8Decoder:
    """The parts of a forward pass for sampling that every architecture shares.

    A subclass sets `layers` (one dict of packed matrices per block, keyed by its own layer
    kinds), `wte` (float input embedding), `tied`, `head`, `positions`, `kv_heads` and `head_dim`
    (the shape of its key-value cache), and writes `forward`; `adapt` maps an adapter's layer names
    onto its kinds.
    """

    def __init__(self, model, engine: str | None):
        self.config = model.config
        engine = engine or int8_engine()
        if engine is None:
            raise RuntimeError("no int8 kernels on this CPU")
        self.engine = engine
        self.reduce_range = engine in ("fbgemm", "x86")  # 7-bit activations avoid fbgemm's int16 saturation
        self.layers: list[dict] = []

    def new_cache(self, rows: int, length: int) -> list[torch.Tensor]:
        """Per layer, keys and values of the key-value heads in one tensor (2, rows, kv heads, length,
        head width): one write a step."""
        shape = (2, rows, self.kv_heads, length, self.head_dim)
        return [torch.empty(shape) for _ in self.layers]

    def pack(
        self, weight: torch.Tensor, bias: torch.Tensor | None = None, inputs: torch.Tensor | None = None
    ) -> Int8Matrix:
        """`weight` (out, in) as int8; with `inputs` (the largest magnitude seen per input channel
        in calibration), the OUTLIER_CHANNELS largest are kept in float."""
        weight = weight.detach().float()
        bias = None if bias is None else bias.detach().float().contiguous()
        if inputs is None:
            return Int8Matrix(_pack(weight, self.engine), bias)
        channels = inputs.topk(min(OUTLIER_CHANNELS, inputs.shape[0])).indices.sort().values
        columns = weight[:, channels].t().contiguous()
        rest = weight.clone()
        rest[:, channels] = 0
        return Int8Matrix(_pack(rest, self.engine), bias, (channels, columns))

    def _matmul(self, x: torch.Tensor, matrix: Int8Matrix) -> torch.Tensor:
        """x (rows, in) @ the matrix, activations quantized row by row.

        The kernels quantize their input with one scale for all rows; each row is first divided by
        its own largest value, so a row with large activations (an end-of-text token, another
        persona) does not coarsen the others' rounding.
        """
        if matrix.outliers is not None:
            channels, columns = matrix.outliers
            kept = x[:, channels]
            x = x.index_fill(1, channels, 0.0)
        scale = x.abs().amax(1, keepdim=True).clamp_(min=1e-30)
        y = torch.ops.quantized.linear_dynamic(x / scale, matrix.packed, self.reduce_range).mul_(scale)
        if matrix.bias is not None:
            y += matrix.bias
        return y if matrix.outliers is None else y.addmm_(kept, columns)

    def adapt(self, lora: LoraWeights | None) -> LoraWeights | None:
        """`lora` with its layers named by this decoder's kinds (None: it adapts a layer this
        decoder does not know, so the persona takes the generic path)."""
        raise NotImplementedError

    def _linear(self, x: torch.Tensor, layer: int, kind: str, lora: RowLora | None) -> torch.Tensor:
        """x (rows * length, in) through one int8 matrix, plus each row's LoRA delta."""
        y = self._matmul(x, self.layers[layer][kind])
        down = None if lora is None else lora.down.get((layer, kind))
        if down is None:
            return y
        low = x @ down
        select = lora.select[(layer, kind)]
        if select is not None:  # rows of several personas: each keeps its own adapter's columns
            low.view(select.shape[0], -1, low.shape[1]).mul_(select[:, None])
        return y.addmm_(low, lora.up[(layer, kind)])

    def _embed(self, ids: torch.Tensor, lora: RowLora | None) -> torch.Tensor:
        """Input embeddings, each row's token rows in place of the base's for the tokens it trained."""
        x = self.wte[ids]
        tokens = None if lora is None else lora.tokens
        if tokens is None:
            return x
        slot = tokens.slot[tokens.adapter[:, None], ids]  # (rows, length): -1 where the base's row stands
        own = tokens.table.t()[slot.clamp(min=0)]
        return torch.where(slot[..., None] >= 0, own, x)

    def _logits(self, last: torch.Tensor, lora: RowLora | None, rows: int) -> torch.Tensor:
        """The output layer's logits of `last` (rows * positions, width), with each row's token rows."""
        logits = self._matmul(last, self.head)
        self._token_logits(last, logits, lora, rows)
        return logits

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


def input_ranges(model, modules: dict) -> dict:
    """The largest magnitude each module's input channels take over a calibration pass of the float
    model: seeded random tokens, end-of-text first and now and then, as the bot's prompts are laid
    out (the large channels are the model's own, whatever the text: measured the same on tweets)."""
    config = model.config
    eos = config.eos_token_id if isinstance(config.eos_token_id, int) else 0
    length = min(64, getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 64))
    ids = torch.randint(0, config.vocab_size, (2, length), generator=torch.Generator().manual_seed(0))
    ids[:, :: max(1, length // 4)] = eos
    ranges: dict[str, torch.Tensor] = {}

    def watch(name):
        def hook(_module, args):
            seen = args[0].detach().float().abs().flatten(0, -2).amax(0)
            ranges[name] = seen if name not in ranges else torch.maximum(ranges[name], seen)

        return hook

    handles = [module.register_forward_pre_hook(watch(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return ranges
