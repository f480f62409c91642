"""The fused LoRA layers (adapters.fast_lora_layers) compute what peft's own layers do: the same loss
and the same gradients for every adapter and token row, on GPT-2 (Conv1D layers stored transposed),
Llama and Qwen2 (q/k/v biases), in fp32 and under bf16 autocast with the frozen weights in bf16 as
training keeps them; a layer it cannot do exactly (dropout) keeps peft's forward."""

import copy

import pytest
import torch

from bot.core.training.adapters import fast_lora_layers, fast_token_rows, frozen_weights_in, wrap_lora
from bot.core.training.headloss import causal_lm_loss
from bot.core.training.recipe import TrainConfig
from tests.tiny_model import build_tiny_causal_lm

LAYERS = {"gpt2": 2 * 4, "llama": 2 * 7, "qwen2": 2 * 7}  # adapted layers of the tiny models (2 blocks)


@pytest.fixture(scope="module")
def bases(tmp_path_factory, tiny_base_model):
    root = tmp_path_factory.mktemp("fast-lora")
    return {
        "gpt2": tiny_base_model,
        "llama": str(build_tiny_causal_lm(root / "llama", "llama")),
        "qwen2": str(build_tiny_causal_lm(root / "qwen2", "qwen2")),
    }


def _lora_model(path: str, dropout: float = 0.0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path)
    model = wrap_lora(base, TrainConfig(lora_dropout=dropout), list(range(2, 200, 3)))
    fast_token_rows(model)
    with torch.no_grad():  # adapters that moved, as after some steps (B starts at zero)
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def _loss_and_grads(model, dtype):
    torch.manual_seed(1)
    ids = torch.randint(3, 200, (3, 24))
    labels, mask = ids.clone(), torch.ones_like(ids)
    labels[2, 17:], mask[2, 17:] = -100, 0
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = causal_lm_loss(model, batch, dtype)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_fused_lora_layers_match_peft_in_fp32(bases, arch):
    peft_model = _lora_model(bases[arch]).eval()
    fused = copy.deepcopy(peft_model)
    assert fast_lora_layers(fused) == LAYERS[arch]
    loss, grads = _loss_and_grads(peft_model, None)
    ours, our_grads = _loss_and_grads(fused, None)
    assert ours == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == our_grads.keys() and any("lora_A" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_fused_lora_layers_are_as_close_to_fp32_as_peft_under_bf16_autocast(bases, arch):
    model = _lora_model(bases[arch]).eval()
    exact = _loss_and_grads(model, None)
    frozen_weights_in(model, torch.bfloat16)  # as training keeps them
    fused = copy.deepcopy(model)
    fast_lora_layers(fused)
    loss, grads = _loss_and_grads(model, torch.bfloat16)
    ours, our_grads = _loss_and_grads(fused, torch.bfloat16)
    # peft rounds the adapter's output and then its sum with the base's to bf16, the fused product
    # adds them before rounding once: both are within bf16's precision of the fp32 values, the fused
    # one no further off than peft
    assert ours == pytest.approx(exact[0], rel=1e-2)
    assert abs(ours - exact[0]) <= 1.5 * abs(loss - exact[0]) + 1e-3 * exact[0]
    for name, grad in exact[1].items():
        scale = float(grad.abs().max()) or 1.0
        peft_error = float((grads[name] - grad).abs().max())
        our_error = float((our_grads[name] - grad).abs().max())
        assert our_error <= 0.05 * scale, name
        assert our_error <= 1.5 * peft_error + 0.005 * scale, name


def test_a_layer_with_dropout_keeps_peft_forward(bases):
    peft_model = _lora_model(bases["llama"], dropout=0.5).train()
    fused = copy.deepcopy(peft_model)
    fast_lora_layers(fused)
    # the same seed, so the same dropout masks: the loss is peft's to the last digit, and not the
    # loss without dropout
    assert _loss_and_grads(fused, None)[0] == _loss_and_grads(peft_model, None)[0]
    assert _loss_and_grads(fused, None)[0] != _loss_and_grads(peft_model.eval(), None)[0]
