"""LoRA adapters and token rows (peft): which layers an architecture adapts, and the optimizer groups
(the token rows get a learning rate of their own)."""

from __future__ import annotations

import logging
from typing import Any

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
