"""The Llama family's forward pass for sampling on the int8 decoder (Llama, SmolLM2, Qwen2): RMSNorm,
rotary positions with the model's own rope settings, a SwiGLU MLP, grouped-query attention over a
KV cache of the key-value heads only, tied or untied embeddings, and Qwen2's q/k/v biases.

Each block has four int8 matrices, not seven: q, k and v are one matrix and the gate and up
projections another, so a step of a few rows makes half as many kernel calls (on 2 CPU cores a
call of a 576-wide layer costs about what reading its weights does). A LoRA persona's adapters
of those layers are fused the same way when it is loaded (`adapt`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bot.core.generation.decoding import position_limit
from bot.core.generation.int8ops import Int8Decoder, LoraWeights, RowLora, input_ranges

# peft's names of a block's linear layers -> (this decoder's fused matrix, the part it is of it).
_PARTS = {
    "self_attn.q_proj": ("qkv", 0),
    "self_attn.k_proj": ("qkv", 1),
    "self_attn.v_proj": ("qkv", 2),
    "self_attn.o_proj": ("o", 0),
    "mlp.gate_proj": ("gate_up", 0),
    "mlp.up_proj": ("gate_up", 1),
    "mlp.down_proj": ("down", 0),
}
LAYERS = tuple(_PARTS)
# Rope variants whose angles depend only on the position (precomputed once); "dynamic" and
# "longrope" change them with the sequence's length and take the generic path.
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")
# Rotary angles are precomputed for this many positions at most (a tweet's prompt and answer use a
# few hundred); the decoder then says it has this many, and prompts are fitted to it.
_MAX_POSITIONS = 8192


def _rope_type(config) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return params.get("rope_type", params.get("type", "default"))


def supports(config) -> bool:
    return (
        getattr(config, "model_type", None) in ("llama", "qwen2")
        and getattr(config, "hidden_act", None) == "silu"
        and not getattr(config, "use_sliding_window", False)
        and _rope_type(config) in _STATIC_ROPE
    )


def _joined(modules) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Linear layers' weights as one (out, in) matrix, and their biases (zeros where one has none)."""
    weight = torch.cat([m.weight.detach().float() for m in modules])
    if all(m.bias is None for m in modules):
        return weight, None
    biases = [m.bias if m.bias is not None else torch.zeros(m.out_features) for m in modules]
    return weight, torch.cat([b.detach().float() for b in biases])


class Int8Llama(Int8Decoder):
    """A Llama-family forward pass for sampling: int8 matrices, KV cache, LoRA per row."""

    def __init__(self, model, engine: str | None = None):
        super().__init__(model, engine)
        config, core = model.config, model.model
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.width = config.hidden_size
        self.head_dim = getattr(config, "head_dim", None) or self.width // self.heads
        self.eps = config.rms_norm_eps
        self.positions = min(position_limit(config) or _MAX_POSITIONS, _MAX_POSITIONS)
        self.wte = core.embed_tokens.weight.detach().float().clone()
        self.vocab = self.wte.shape[0]
        self.tied = model.lm_head.weight is core.embed_tokens.weight  # token rows then also set their logits
        self.cos, self.sin = self._rotary_tables(core.rotary_emb)
        mlp_width = core.layers[0].mlp.gate_proj.out_features
        kv = self.kv_heads * self.head_dim
        self.part_widths = {
            "qkv": (self.heads * self.head_dim, kv, kv),
            "o": (self.width,),
            "gate_up": (mlp_width, mlp_width),
            "down": (self.width,),
        }
        # Each fused matrix's input is that of its first layer (q for q/k/v, gate for gate/up).
        firsts = {
            "qkv": "self_attn.q_proj",
            "o": "self_attn.o_proj",
            "gate_up": "mlp.gate_proj",
            "down": "mlp.down_proj",
        }
        watched = {
            (index, kind): block.get_submodule(name)
            for index, block in enumerate(core.layers)
            for kind, name in firsts.items()
        }
        ranges = input_ranges(model, watched | {"head": model.lm_head})
        for index, block in enumerate(core.layers):
            attention, mlp = block.self_attn, block.mlp
            parts = {
                "qkv": [attention.q_proj, attention.k_proj, attention.v_proj],
                "o": [attention.o_proj],
                "gate_up": [mlp.gate_proj, mlp.up_proj],
                "down": [mlp.down_proj],
            }
            layer = {
                kind: self.pack(*_joined(modules), ranges[(index, kind)]) for kind, modules in parts.items()
            }
            layer["input_norm"] = block.input_layernorm.weight.detach().float()
            layer["post_norm"] = block.post_attention_layernorm.weight.detach().float()
            self.layers.append(layer)
        self.norm = core.norm.weight.detach().float()
        self.head = self.pack(*_joined([model.lm_head]), ranges["head"])

    def _rotary_tables(self, rotary) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin per position (positions, head width) from the model's own rotary module, sin
        signed so that rotating half of a head is a flip of its halves: x*cos + flip(x)*sin."""
        positions = torch.arange(self.positions)[None]
        with torch.no_grad():
            cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
        cos, sin = cos[0].float(), sin[0].float().clone()
        sin[:, : self.head_dim // 2] *= -1
        return cos.contiguous(), sin.contiguous()

    def adapt(self, lora: LoraWeights | None) -> LoraWeights | None:
        """The adapter with q/k/v and gate/up fused as the matrices are: the A matrices side by
        side, the B matrices block-diagonal, so each part's delta lands on its own outputs."""
        if lora is None or any(name not in _PARTS for _, name in lora.pairs):
            return None
        grouped: dict[tuple[int, str], list] = {}
        for (layer, name), (down, up) in lora.pairs.items():
            kind, part = _PARTS[name]
            grouped.setdefault((layer, kind), []).append((part, down, up))
        fused = {}
        for (layer, kind), parts in grouped.items():
            widths = self.part_widths[kind]
            parts.sort(key=lambda p: p[0])
            down = torch.cat([d for _, d, _ in parts], dim=1)
            up = torch.zeros(down.shape[1], sum(widths))
            row = 0
            for part, d, u in parts:
                column = sum(widths[:part])
                up[row : row + d.shape[1], column : column + widths[part]] = u
                row += d.shape[1]
            fused[(layer, kind)] = (down, up)
        return LoraWeights(fused, lora.token_ids, lora.token_rows)

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

        `mask` (rows, 1, length, keys) says which keys each query sees; None: all of them.
        """
        rows, length = ids.shape
        width, eps = self.width, self.eps
        x = self._embed(ids, lora).view(rows * length, width)
        rope = (
            self.cos[positions][:, :, None],
            self.sin[positions][:, :, None],
        )  # (rows, length, 1, head width)
        for index, layer in enumerate(self.layers):
            h = F.rms_norm(x, (width,), layer["input_norm"], eps)
            qkv = self._linear(h, index, "qkv", lora)
            x += self._linear(self._attend(qkv, cache[index], rows, start, mask, rope), index, "o", lora)
            h = F.rms_norm(x, (width,), layer["post_norm"], eps)
            gate, up = self._linear(h, index, "gate_up", lora).chunk(2, dim=-1)
            x += self._linear(F.silu(gate).mul_(up), index, "down", lora)
        x = x.view(rows, length, width)
        last = F.rms_norm(x[:, -1] if last_only else x, (width,), self.norm, eps)
        logits = self._logits(last.reshape(-1, width), lora, rows)
        return logits if last_only else logits.view(rows, length, -1)

    def _attend(self, qkv, layer_cache, rows: int, start: int, mask, rope) -> torch.Tensor:
        """Attention of the new positions over the cache, after writing their keys and values into it."""
        length = qkv.shape[0] // rows
        heads, kv, width = self.heads, self.kv_heads, self.head_dim
        qkv = qkv.view(rows, length, heads + 2 * kv, width)
        qk = qkv[:, :, : heads + kv]
        cos, sin = rope
        qk = torch.addcmul(qk * cos, qk.unflatten(-1, (2, width // 2)).flip(-2).flatten(-2), sin)
        end = start + length
        layer_cache[0, :, :, start:end] = qk[:, :, heads:].transpose(1, 2)
        layer_cache[1, :, :, start:end] = qkv[:, :, heads + kv :].transpose(1, 2)
        keys, values = layer_cache[:, :, :, :end]
        # Grouped-query attention without repeating the keys: the query heads that share a key-value
        # head are that head's queries at more positions (group * length of them).
        group = heads // kv
        q = qk[:, :, :heads].unflatten(2, (kv, group)).permute(0, 2, 3, 1, 4).reshape(rows, kv, -1, width)
        if mask is not None and length > 1:
            mask = (
                mask[:, :, None].expand(-1, -1, group, -1, -1).reshape(mask.shape[0], 1, group * length, -1)
            )
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        attended = attended.view(rows, kv, group, length, width).permute(0, 3, 1, 2, 4)
        return attended.reshape(rows * length, heads * width)
