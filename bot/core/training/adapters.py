"""LoRA adapters and token rows (peft): which layers an architecture adapts, and the optimizer groups
(the token rows get a learning rate of their own)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from bot.core.training.recipe import TrainConfig

log = logging.getLogger(__name__)


# Where an architecture's own names are known, LoRA targets them (GPT-2's Conv1D layers: personas
# trained before keep loading); any other causal LM gets peft's "all-linear" (every linear layer
# of its blocks, not the output head).
LORA_TARGET_MODULES = {"gpt2": ["c_attn", "c_proj", "c_fc"]}


# Layer norms trained with lora_train_norms, where the architecture's names are known.
LORA_NORM_MODULES = {"gpt2": ["ln_1", "ln_2", "ln_f"]}


def lora_targets(model) -> tuple[list[str] | str, bool]:
    """LoRA target modules for this model's architecture, and whether they store weights transposed."""
    from transformers.pytorch_utils import Conv1D

    targets = LORA_TARGET_MODULES.get(getattr(model.config, "model_type", ""), "all-linear")
    fan_in_fan_out = any(isinstance(module, Conv1D) for module in model.modules())  # GPT-2 style layers
    return targets, fan_in_fan_out


def wrap_lora(model, config: TrainConfig, token_indices: list[int] | None = None):
    """LoRA adapters per `config`; with `token_indices`, those embedding rows are trained too."""
    from peft import LoraConfig, get_peft_model

    targets, fan_in_fan_out = lora_targets(model)
    norms = LORA_NORM_MODULES.get(getattr(model.config, "model_type", ""))
    train_norms = config.lora_train_norms and norms is not None
    if config.lora_train_norms and norms is None:
        log.warning(
            "lora_train_norms: layer-norm names of %s are not known; training LoRA only",
            model.config.model_type,
        )
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,  # GPT-2's Conv1D stores its weight transposed
        use_rslora=config.use_rslora,
        use_dora=config.use_dora,
        # Layer norms and biases are ~0.1% of GPT-2's weights: cheap to train and to save.
        bias="all" if train_norms else "none",
        modules_to_save=norms if train_norms else None,
        # peft ties the output layer's rows to these when the model ties its embeddings (GPT-2).
        trainable_token_indices=token_indices or None,
    )
    return get_peft_model(model, lora)


def fast_token_rows(model) -> int:
    """Train peft's token rows without rebuilding the whole vocabulary matrix at every forward.

    peft's TrainableTokensLayer copies the embedding matrix with the trained rows written in
    (`index_copy`) on every call, for the embedding and again for the tied output layer, and autograd
    then computes the output layer's full weight gradient (vocabulary x width) just to keep the rows'
    part: the share of a full fine-tune's arithmetic that LoRA is meant to skip. Here the frozen matrix
    is used as it is and only the trained rows are computed: looked up where their tokens occur, and
    for the logits a correction `x @ (rows - original rows)^T` added to their columns (the same values:
    x.W_j + x.(row_j - W_j) = x.row_j). The parameters, and so the saved files, are peft's own.
    Returns how many layers were sped up; layers this cannot do exactly keep peft's forward."""
    import types

    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    count = 0
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer) and module._get_embed_scale() is None:
            module.forward = types.MethodType(_token_rows_forward, module)
            count += 1
    return count


def _token_rows_forward(layer, x, *args, **kwargs):
    import torch
    import torch.nn.functional as F

    adapters = layer.active_adapters
    base = layer.base_layer
    if layer.disable_adapters or layer.merged or len(adapters) != 1 or args or kwargs:
        return type(layer).forward(layer, x, *args, **kwargs)
    delta = layer.trainable_tokens_delta[adapters[0]]
    weight = base.weight
    index = cached_token_index(layer, adapters[0], weight.device)
    if isinstance(base, torch.nn.Embedding):
        slots = _cached_slots(layer, adapters[0], weight.shape[0], weight.device)[x]
        out = F.embedding(x, weight, padding_idx=base.padding_idx)
        rows = F.embedding(slots.clamp(min=0), delta.to(out.dtype))  # its backward adds up in a fixed order
        return torch.where((slots >= 0).unsqueeze(-1), rows, out)
    if isinstance(base, torch.nn.Linear) and base.bias is None:
        out = F.linear(x, weight)
        correction = F.linear(x, delta.to(weight.dtype) - weight[index])
        return out.index_add_(-1, index, correction.to(out.dtype))
    return type(layer).forward(layer, x, *args, **kwargs)


def cached_token_index(layer, adapter: str, device):
    import torch

    cache = layer.__dict__.setdefault("_fast_index", {})
    if adapter not in cache:
        cache[adapter] = torch.tensor(layer.token_indices[adapter], dtype=torch.long, device=device)
    return cache[adapter]


def _cached_slots(layer, adapter: str, vocabulary: int, device):
    """Token id -> its row among the trained ones, -1 for the others."""
    import torch

    cache = layer.__dict__.setdefault("_fast_slots", {})
    if adapter not in cache:
        index = cached_token_index(layer, adapter, device)
        slots = torch.full((vocabulary,), -1, dtype=torch.long, device=device)
        slots[index] = torch.arange(len(index), device=device)
        cache[adapter] = slots
    return cache[adapter]


def fast_lora_layers(model) -> int:
    """Train peft's LoRA linear layers with one fused product instead of peft's chain of modules.

    peft computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`: under autocast the input is cast
    to the adapters' fp32 and back to bf16 for each layer (twice more in the backward), the scaling
    is a pass over the output and the sum another. On the real base a profile put about a sixth of
    a LoRA step in those passes. Here the input is cast once, the scaling goes into the small B
    matrix, and the adapter's product is added into the base's output in place (`addmm_`); the
    backward is written out (the same products). The parameters, and so the saved files, are peft's
    own. Returns how many layers were sped up; a layer this cannot do exactly (dropout, DoRA, merged
    or several adapters, trained biases) keeps peft's forward, checked at every call."""
    import types

    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = types.MethodType(_lora_forward, module)
            count += 1
    return count


def _plain_adapter(layer) -> str | None:
    """The one vanilla adapter of `layer` that the fused product can compute, or None."""
    import torch

    adapters = layer.active_adapters
    if layer.disable_adapters or layer.merged or len(adapters) != 1 or adapters[0] not in layer.lora_A:
        return None
    name, base = adapters[0], layer.get_base_layer()
    if name in layer.lora_variant or not isinstance(layer.lora_dropout[name], torch.nn.Identity):
        return None
    if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
        return None
    return name


def _lora_forward(layer, x, *args, **kwargs):
    import torch

    name = None if args or kwargs else _plain_adapter(layer)
    if name is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    base = layer.get_base_layer()
    weight = base.weight.T if layer.fan_in_fan_out else base.weight  # (out, in): GPT-2 stores (in, out)
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    return _LoraProduct.apply(x, weight, base.bias, a, b, layer.scaling[name], dtype)


class _LoraProduct(torch.autograd.Function):
    """`x @ W^T (+ bias) + (x @ A^T) @ (scaling * B)^T` in `dtype`, for a frozen W and trained A, B."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling, dtype):
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).to(dtype)
            w, a, b = weight.to(dtype), lora_a.to(dtype), (lora_b * scaling).to(dtype)
            low = flat @ a.T
            out = flat @ w.T if bias is None else torch.addmm(bias.to(dtype), flat, w.T)
            out.addmm_(low, b.T)
        ctx.save_for_backward(flat, w, a, b, low)
        ctx.meta = (x.shape, x.dtype, lora_a.dtype, scaling)
        return out.reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        flat, w, a, b, low = ctx.saved_tensors
        shape, x_dtype, lora_dtype, scaling = ctx.meta
        grad = grad_out.reshape(-1, grad_out.shape[-1]).to(flat.dtype)
        grad_low = grad @ b
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ w).addmm_(grad_low, a).reshape(shape).to(x_dtype)
        if ctx.needs_input_grad[3]:
            grad_a = (grad_low.T @ flat).to(lora_dtype)
        if ctx.needs_input_grad[4]:
            grad_b = ((grad.T @ low) * scaling).to(lora_dtype)
        return grad_x, None, None, grad_a, grad_b, None, None


def frozen_weights_in(model, dtype) -> int:
    """Store the frozen base weights of the adapted layers in the autocast dtype.

    Autocast casts a frozen fp32 weight to bf16 at every use (it caches only trainable leaves): on
    the real base a profile put a ninth of a LoRA step in these copies, though timed runs gained less
    than their noise (docs/performance.md). Cast once, the products get the same bf16 values, so the
    loss is the same to the last digit. Embeddings and
    layer norms stay fp32 (the residual stream and the norms are computed in fp32 under autocast).
    Returns how many weights were cast."""
    from peft.tuners.lora import LoraLayer

    count = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            if not weight.requires_grad and weight.dtype != dtype:
                weight.data = weight.data.to(dtype)
                count += 1
    return count


def continue_lora(model, folder: str):
    """A LoRA persona's adapters and token rows put back on its base, trainable: an update goes on
    from them (the same layers and token rows; its saved bf16 values become the fp32 start)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, folder, is_trainable=True)


def parameter_groups(model, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's groups: the token rows (raw embedding rows) get their own learning rate and
    no weight decay; everything else trained takes the method's learning rate."""
    rows, others = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (rows if "trainable_tokens_" in name else others).append(parameter)
    groups = [{"params": others}] if others else []
    if rows:
        groups.append({"params": rows, "lr": config.token_rows_lr, "weight_decay": 0.0})
    return groups
