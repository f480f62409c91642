"""The fast path for trained token rows (adapters.fast_token_rows) computes what peft's own layer does:
the same loss and the same gradients for the rows and the adapters, on a tied and on an untied model."""

import copy

import pytest
import torch

from bot.core.training.adapters import fast_token_rows, wrap_lora
from bot.core.training.recipe import TrainConfig


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


@pytest.mark.parametrize("tied", [True, False])
def test_fast_token_rows_match_peft(tiny_base_model, tied):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_base_model, tie_word_embeddings=tied)
    rows = [3, 5, 8, 13, 21, 34, 55]
    peft_model = wrap_lora(base, TrainConfig(lora_dropout=0.0), rows)
    with torch.no_grad():  # trained rows that differ from the base's, as after some steps
        for name, parameter in peft_model.named_parameters():
            if "trainable_tokens_delta" in name:
                parameter.add_(torch.randn_like(parameter) * 0.5)
    fast = copy.deepcopy(peft_model)
    assert fast_token_rows(fast) == (2 if tied else 1)
    ids = torch.tensor([[1, 3, 5, 7, 8, 13, 2, 21], [34, 55, 4, 6, 9, 3, 3, 1]])
    batch = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}
    loss, grads = _loss_and_grads(peft_model, batch)
    fast_loss, fast_grads = _loss_and_grads(fast, batch)
    assert fast_loss == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == fast_grads.keys() and any("trainable_tokens_delta" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
