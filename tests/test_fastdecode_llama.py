"""The int8 decoder of the Llama family (Llama, SmolLM2, Qwen2): transformers' logits within int8
rounding (grouped-query attention, rotary positions with the model's own settings, untied and tied
embeddings, Qwen2's q/k/v biases), LoRA and token rows per row in a batch that mixes personas, the
KV-cache step equal to a whole pass, and the generator choosing the path (and saying which)."""

import pytest
import torch

from bot.core import devices
from bot.core.generation import fastdecode
from bot.core.generation.decoding import Sampling
from bot.core.generation.generator import GenerationRequest, Generator
from bot.core.training.loop import train
from bot.core.training.recipe import TrainConfig
from tests.conftest import tiny_tweets
from tests.tiny_model import build_tiny_causal_lm, set_adapter_weights

pytestmark = pytest.mark.skipif(devices.int8_engine() is None, reason="no int8 kernels on this CPU")

# Int8 weights and activations: a logit is off by a few percent of the largest one at most.
TOLERANCE = 0.06
# In a batch, activations are quantized with one scale for all rows: beside a persona whose adapter
# moves them far (these seeded adapters do, much more than trained ones), a row rounds coarser.
MIXED_TOLERANCE = 0.15


def load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def close(got: torch.Tensor, reference: torch.Tensor, scale: float, tolerance: float = TOLERANCE) -> bool:
    return float((got - reference).abs().max()) < tolerance * scale


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """A tiny Llama (untied embeddings, 4 query heads on 2 key-value heads) and a tiny Qwen2
    (tied embeddings, q/k/v biases set to non-zero values, as trained Qwen2 models have)."""
    root = tmp_path_factory.mktemp("llama")
    llama = build_tiny_causal_lm(root / "llama", "llama", hidden=128, heads=4, layers=2)
    qwen = build_tiny_causal_lm(root / "qwen2", "qwen2", hidden=128, heads=4, layers=2, seed=1)
    model = load(qwen)
    generator = torch.Generator().manual_seed(3)
    for block in model.model.layers:
        for name in ("q_proj", "k_proj", "v_proj"):
            bias = getattr(block.self_attn, name).bias
            bias.data = torch.randn(bias.shape, generator=generator) * 0.5
    model.save_pretrained(qwen)
    return {"llama": str(llama), "qwen2": str(qwen)}


@pytest.fixture(scope="module")
def personas(bases, tmp_path_factory):
    """Per base, a LoRA persona with trained token rows (the default) and one without."""
    root = tmp_path_factory.mktemp("llama-personas")
    common = dict(epochs=1, batch_size=8, block_size=64, max_steps=3, learning_rate=2e-2)
    out = {}
    for arch, base in bases.items():
        rows = train(
            tiny_tweets(), root / f"{arch}-rows", TrainConfig(base_model=base, lora_token_rows=40, **common)
        )
        plain = train(
            tiny_tweets()[::-1],
            root / f"{arch}-plain",
            TrainConfig(base_model=base, lora_token_rows=0, **common),
        )
        # Known adapter weights: the claims must not depend on how far 3 steps move them here.
        out[arch] = (
            str(set_adapter_weights(rows.output_dir, 1)),
            str(set_adapter_weights(plain.output_dir, 2)),
        )
    return out


def random_ids(rows: int, length: int, seed: int, trained: torch.Tensor | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 500, (rows, length), generator=generator)
    if trained is not None:  # half the positions are tokens with trained rows
        ids[:, ::2] = trained[
            torch.randint(0, trained.shape[0], (rows, (length + 1) // 2), generator=generator)
        ]
    return ids


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@torch.inference_mode()
def test_int8_logits_match_transformers(bases, arch):
    model = load(bases[arch])
    assert fastdecode.supports(model.config)
    decoder = fastdecode.build(model)
    assert isinstance(decoder, fastdecode.Int8Llama) and decoder.tied == (arch == "qwen2")
    ids = random_ids(3, 24, 0)
    reference = model(ids).logits
    assert close(decoder.logits_of(ids), reference, float(reference.abs().max()))


@torch.inference_mode()
def test_rope_settings_and_head_width_are_the_models_own(tmp_path):
    """Linear rope scaling, a rope base of its own and a head width that is not hidden / heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=96,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=24,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0},
    )
    model = LlamaForCausalLM(config).eval()
    decoder = fastdecode.build(model)
    ids = random_ids(2, 40, 1) % 300
    reference = model(ids).logits
    assert close(decoder.logits_of(ids), reference, float(reference.abs().max()))
    dynamic = LlamaConfig(**(config.to_dict() | {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}))
    assert not fastdecode.supports(dynamic)  # angles that change with the length: the generic path


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@torch.inference_mode()
def test_lora_and_token_rows_per_row_in_one_mixed_pass(bases, personas, arch):
    """Three personas in one batch (token rows, plain LoRA, the bare base), each row as peft gives it."""
    from peft import PeftModel

    with_rows, plain = personas[arch]
    decoder = fastdecode.build(load(bases[arch]))
    adapters = [decoder.adapt(fastdecode.LoraWeights.load(p)) for p in (with_rows, plain)]
    assert adapters[0].token_ids.shape == (40,) and adapters[1].token_ids is None
    assert {kind for _, kind in adapters[1].pairs} == {"qkv", "o", "gate_up", "down"}  # fused as the matrices
    ids = random_ids(3, 20, 2, trained=adapters[0].token_ids)
    reference = [
        PeftModel.from_pretrained(load(bases[arch]), p).eval()(ids).logits for p in (with_rows, plain)
    ]
    reference.append(load(bases[arch])(ids).logits)
    mixed = decoder.logits_of(ids, fastdecode.stack_lora([*adapters, None], decoder.vocab))
    scale = float(reference[0].abs().max())
    for row in range(3):
        assert close(mixed[row], reference[row][row], scale, MIXED_TOLERANCE)
    for row in range(2):  # each persona changes its row far more than the rounding
        assert not close(reference[row][row], reference[2][row], scale, 2 * MIXED_TOLERANCE)


@torch.inference_mode()
def test_the_cache_step_gives_the_whole_sequence_logits(bases, personas):
    decoder = fastdecode.build(load(bases["qwen2"]))
    adapters = [decoder.adapt(fastdecode.LoraWeights.load(p)) for p in personas["qwen2"]] + [None]
    lora = fastdecode.stack_lora(adapters, decoder.vocab)
    ids = random_ids(3, 12, 4)
    whole = decoder.logits_of(ids, lora)
    cache = decoder.new_cache(3, 12)
    for t in range(12):
        step = decoder.forward(ids[:, t : t + 1], torch.full((3, 1), t), cache, t, None, lora)
        # Activations are quantized per call (a step's rows vs the whole sequence): rounding differs.
        assert close(step, whole[:, t], float(whole.abs().max()))


def test_generator_takes_the_int8_path_for_llama_personas_and_says_so(bases, personas):
    with_rows, plain = personas["llama"]
    int8 = Generator(Sampling(max_new_tokens=10, min_new_tokens=3), cache_size=4)
    requests = [GenerationRequest(with_rows, "the", 2), GenerationRequest(plain, "we", 2)]
    answers = int8.generate_batch(requests)
    assert [len(a) for a in answers] == [2, 2]
    assert all(t.startswith("the") for t in answers[0]) and all(t.startswith("we") for t in answers[1])
    assert isinstance(int8._load(with_rows).model, fastdecode.Int8Llama)
    assert int8.decoding_path(with_rows) == int8.decoding_path(bases["llama"]) == "int8"
    generic = Generator(Sampling(max_new_tokens=10, min_new_tokens=3), int8=False)
    assert [len(a) for a in generic.generate_batch(requests)] == [2, 2]
    assert generic.decoding_path(with_rows) == "generic"


def test_a_base_without_an_int8_decoder_keeps_the_generic_path(tmp_path):
    neox = build_tiny_causal_lm(tmp_path / "neox", "gpt_neox", hidden=64, heads=4, layers=2)
    generator = Generator(Sampling(max_new_tokens=8, min_new_tokens=2))
    assert len(generator.generate(str(neox), "the", 2)) == 2
    assert not isinstance(generator._load(str(neox)).model, fastdecode.Int8Decoder)
    assert generator.decoding_path(str(neox)) == "generic"
