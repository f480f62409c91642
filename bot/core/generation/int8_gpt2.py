"""GPT-2's forward pass for sampling on the int8 decoder: learned positions, layer norms, GELU MLP,
fused q/k/v (Conv1D layers), multi-head attention over a preallocated KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bot.core.generation.int8ops import Int8Decoder, LoraWeights, RowLora, input_ranges

# The GPT-2 layers a LoRA adapter may adapt on this path, as peft names them inside a block.
LAYERS = _KINDS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def supports(model_config) -> bool:
    return getattr(model_config, "model_type", None) == "gpt2"


class Int8GPT2(Int8Decoder):
    """GPT-2's forward pass for sampling: int8 matrices, KV cache, LoRA per row."""

    def __init__(self, model, engine: str | None = None):
        super().__init__(model, engine)
        config = model.config
        core = model.transformer
        self.heads = config.n_head
        self.width = config.n_embd
        self.kv_heads, self.head_dim = self.heads, self.width // self.heads  # every head has its keys
        self.eps = config.layer_norm_epsilon
        self.positions = config.n_positions
        self.wte = core.wte.weight.detach().float().clone()
        self.vocab = self.wte.shape[0]
        self.tied = model.lm_head.weight is core.wte.weight  # token rows then also set their logits
        self.wpe = core.wpe.weight.detach().float().clone()
        watched = {
            (index, kind): block.get_submodule(kind) for index, block in enumerate(core.h) for kind in _KINDS
        }
        ranges = input_ranges(model, watched | {"head": model.lm_head})
        for index, block in enumerate(core.h):
            layer = {
                "ln_1": (block.ln_1.weight.detach().float(), block.ln_1.bias.detach().float()),
                "ln_2": (block.ln_2.weight.detach().float(), block.ln_2.bias.detach().float()),
            }
            for kind in _KINDS:  # Conv1D stores (in, out): the kernels want (out, in)
                module = block.get_submodule(kind)
                layer[kind] = self.pack(module.weight.t(), module.bias, ranges[(index, kind)])
            self.layers.append(layer)
        self.ln_f = (core.ln_f.weight.detach().float(), core.ln_f.bias.detach().float())
        self.head = self.pack(model.lm_head.weight, None, ranges["head"])

    def adapt(self, lora: LoraWeights | None) -> LoraWeights | None:
        if lora is None or any(kind not in _KINDS for _, kind in lora.pairs):
            return None
        return lora  # peft's names for GPT-2's layers are this decoder's kinds

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
        logits = self._logits(last.reshape(-1, width), lora, rows)
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
