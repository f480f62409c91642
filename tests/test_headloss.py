"""The chunked output-layer loss (training/headloss.py) is the library's loss: the same value and the
same gradients for every trained tensor, on GPT-2, Llama and Qwen2 heads (tied and untied, full
fine-tuning and LoRA with token rows), in fp32 and under bf16 autocast; models it does not know keep
the library's loss. Casting LoRA's frozen weights once (adapters.frozen_weights_in) changes nothing."""

import copy

import pytest
import torch

from bot.core.training.adapters import fast_token_rows, frozen_weights_in, wrap_lora
from bot.core.training.headloss import causal_lm_loss, head_of
from bot.core.training.recipe import TrainConfig
from tests.tiny_model import build_tiny_causal_lm


@pytest.fixture(scope="module")
def bases(tmp_path_factory, tiny_base_model):
    root = tmp_path_factory.mktemp("heads")
    return {
        "gpt2": tiny_base_model,
        "llama": str(build_tiny_causal_lm(root / "llama", "llama")),
        "qwen2": str(build_tiny_causal_lm(root / "qwen2", "qwen2")),
        "gpt_neox": str(build_tiny_causal_lm(root / "neox", "gpt_neox")),
    }


def _model(path: str, method: str, tied: bool):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, tie_word_embeddings=tied)
    if method == "lora":
        model = wrap_lora(model, TrainConfig(), list(range(2, 200, 3)))
        fast_token_rows(model)
        with torch.no_grad():  # adapters and rows that moved, as after some steps
            for name, parameter in model.named_parameters():
                if "lora_B" in name or "trainable_tokens_delta" in name:
                    parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()  # no dropout: both losses see the same network


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(3, 200, (3, 24))
    labels, mask = ids.clone(), torch.ones_like(ids)
    labels[2, 17:], mask[2, 17:] = -100, 0  # a padded row
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _loss_and_grads(model, batch, dtype, chunked):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = causal_lm_loss(model, batch, dtype, chunked)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("tied", [True, False])
def test_chunked_loss_and_gradients_are_the_librarys(bases, arch, method, tied):
    model = _model(bases[arch], method, tied)
    assert head_of(model) is not None
    batch = _batch()
    loss, grads = _loss_and_grads(model, batch, None, chunked=False)
    ours, our_grads = _loss_and_grads(model, batch, None, chunked=True)
    assert ours == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == our_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # bf16 products: the library rounds the token rows' logits twice (base row, then the correction),
    # this path once, so they agree to bf16's precision
    loss, grads = _loss_and_grads(model, batch, torch.bfloat16, chunked=False)
    ours, our_grads = _loss_and_grads(model, batch, torch.bfloat16, chunked=True)
    assert ours == pytest.approx(loss, rel=1e-3)
    for name, grad in grads.items():
        scale = float(grad.abs().max()) or 1.0
        assert float((our_grads[name] - grad).abs().max()) <= 0.03 * scale, name


def test_evaluation_takes_the_same_path_without_gradients(bases):
    model = _model(bases["llama"], "lora", True)
    batch = _batch()
    with torch.no_grad():
        ours, library = causal_lm_loss(model, batch, None), model(**batch).loss
    assert float(ours) == pytest.approx(float(library), rel=1e-6)


def test_an_unknown_head_keeps_the_librarys_loss(bases):
    model = _model(bases["gpt_neox"], "full", False)
    assert head_of(model) is None
    batch = _batch()
    with torch.no_grad():
        assert float(causal_lm_loss(model, batch, None)) == float(model(**batch).loss)


def test_frozen_weights_cast_once_give_the_same_loss_to_the_last_digit(bases):
    model = _model(bases["llama"], "lora", True)
    batch = _batch()
    before = _loss_and_grads(model, batch, torch.bfloat16, chunked=True)
    cast = copy.deepcopy(model)
    assert frozen_weights_in(cast, torch.bfloat16) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert cast.get_base_model().get_input_embeddings().weight.dtype == torch.float32
    after = _loss_and_grads(cast, batch, torch.bfloat16, chunked=True)
    assert after[0] == before[0]
    for name, grad in before[1].items():
        torch.testing.assert_close(after[1][name], grad, rtol=0, atol=0, msg=name)


def test_a_frozen_output_weight_cast_once_follows_its_rows_and_its_values():
    from bot.core.training.headloss import Head, linear_cross_entropy

    torch.manual_seed(0)
    weight = torch.randn(300, 16)  # frozen, fp32: LoRA's tied output layer under bf16 autocast
    hidden, targets = torch.randn(40, 16), torch.randint(0, 300, (40,))
    index = torch.tensor([1, 7, 42, 299])

    def expected(rows):
        matrix = weight.to(torch.bfloat16)
        if rows is not None:
            matrix = matrix.index_copy(0, index, rows.to(torch.bfloat16))
        logits = (hidden.to(torch.bfloat16) @ matrix.T).float()
        return float(torch.nn.functional.cross_entropy(logits, targets))

    def ours(rows):
        head = Head(torch.nn.Identity(), weight, rows, index if rows is not None else None)
        return float(linear_cross_entropy(hidden, head, targets, torch.bfloat16))

    for rows in (torch.randn(4, 16), torch.randn(4, 16), None, torch.randn(4, 16)):
        assert ours(rows) == pytest.approx(expected(rows), rel=1e-5)
    with torch.no_grad():
        weight.mul_(2.0)  # the weight itself changed: the kept copy is made again
    assert ours(None) == pytest.approx(expected(None), rel=1e-5)
