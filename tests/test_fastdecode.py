"""The int8 GPT-2 decoder: same logits (within int8 rounding) and perplexity as the float model,
LoRA applied per row, an unchanged sampling distribution, and the position limit respected."""

import pytest
import torch

from bot.core import devices
from bot.core.generation import fastdecode
from bot.core.generation.decoding import Sampling, sample_tokens, stop_token_ids
from bot.core.generation.generator import GenerationRequest, Generator
from bot.core.generation.nucleus import fit_to_positions, top_p_sample
from bot.core.training.data import encode_tweets, split_tweets
from bot.core.training.loop import train
from bot.core.training.recipe import TrainConfig
from tests.conftest import tiny_tweets
from tests.stats import chi_square_p_value, exact_nucleus, untied_top_p
from tests.tiny_model import build_tiny_gpt2, set_adapter_weights

pytestmark = pytest.mark.skipif(devices.int8_engine() is None, reason="no int8 kernels on this CPU")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GPT-2 trained a little (full), and a LoRA persona on top of it."""
    root = tmp_path_factory.mktemp("int8")
    base = str(build_tiny_gpt2(root / "base", n_embd=128, n_head=4, n_positions=64))
    common = dict(epochs=1, batch_size=8, block_size=64, max_steps=15)
    full = train(
        tiny_tweets(),
        root / "full",
        TrainConfig(base_model=base, method="full", learning_rate=3e-3, **common),
    )
    lora = train(
        tiny_tweets(),
        root / "lora",
        TrainConfig(base_model=str(full.output_dir), learning_rate=2e-2, lora_token_rows=0, **common),
    )
    # Known adapter weights: the claims below must not depend on how far 15 steps move them here.
    return str(full.output_dir), str(set_adapter_weights(lora.output_dir, seed=1))


@pytest.fixture(scope="module")
def with_rows(trained, tmp_path_factory):
    """A LoRA persona with trained token rows (the default), on the same base as `trained`'s."""
    root = tmp_path_factory.mktemp("rows")
    common = dict(epochs=1, batch_size=8, block_size=64, max_steps=15)
    persona = train(
        tiny_tweets()[::-1],
        root / "rows",
        TrainConfig(base_model=trained[0], learning_rate=2e-2, lora_token_rows=60, seed=7, **common),
    )
    return str(set_adapter_weights(persona.output_dir, seed=2))


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@torch.inference_mode()
def test_int8_logits_and_per_row_lora_match_the_float_model(trained):
    from peft import PeftModel

    full, lora = trained
    model, _ = load(full)
    decoder = fastdecode.Int8GPT2(model)
    ids = torch.randint(0, 400, (3, 20), generator=torch.Generator().manual_seed(0))
    reference = model(ids).logits
    got = decoder.logits_of(ids)
    assert (got - reference).abs().max() < 0.05 * reference.abs().max()

    adapter = fastdecode.LoraWeights.load(lora)
    assert adapter is not None and len(adapter.pairs) == 4 * model.config.n_layer
    with_lora = PeftModel.from_pretrained(load(full)[0], lora).eval()(ids).logits
    mixed = decoder.logits_of(ids, fastdecode.stack_lora([adapter, None, adapter]))  # one pass, two personas
    scale = with_lora.abs().max()
    assert (mixed[0] - with_lora[0]).abs().max() < 0.05 * scale
    assert (mixed[2] - with_lora[2]).abs().max() < 0.05 * scale
    assert (mixed[1] - reference[1]).abs().max() < 0.05 * scale
    assert (with_lora[0] - reference[0]).abs().max() > 0.2 * scale  # the adapter does change the output


@torch.inference_mode()
def test_int8_token_rows_match_the_float_model_per_row_in_a_mixed_batch(trained, with_rows):
    """A persona's token rows replace the base's rows in the input embedding and, the output layer
    being tied, in the logits of those tokens; per row, so personas with and without rows mix."""
    from peft import PeftModel

    full, plain = trained
    model, _ = load(full)
    decoder = fastdecode.Int8GPT2(model)
    rows, other = fastdecode.LoraWeights.load(with_rows), fastdecode.LoraWeights.load(plain)
    assert rows.token_ids.shape == (60,) and rows.token_rows.shape == (60, 128) and other.token_ids is None
    generator = torch.Generator().manual_seed(1)
    trained_ids = rows.token_ids[torch.randint(0, 60, (3, 10), generator=generator)]
    ids = torch.cat([trained_ids, torch.randint(0, 400, (3, 10), generator=generator)], 1)[
        :, torch.randperm(20)
    ]
    reference = {
        path: PeftModel.from_pretrained(load(full)[0], path).eval()(ids).logits for path in (with_rows, plain)
    }
    reference[None] = model(ids).logits
    order = [with_rows, plain, None]
    mixed = decoder.logits_of(ids, fastdecode.stack_lora([rows, other, None], decoder.vocab))  # one pass
    scale = reference[with_rows].abs().max()
    for row, path in enumerate(order):
        assert (mixed[row] - reference[path][row]).abs().max() < 0.05 * scale
    alone = decoder.logits_of(ids[:1], fastdecode.stack_lora([rows], decoder.vocab))
    assert (alone[0] - mixed[0]).abs().max() < 0.05 * scale
    without_rows = decoder.logits_of(ids[:1], fastdecode.stack_lora([fastdecode.LoraWeights(rows.pairs)]))
    assert (without_rows[0] - reference[with_rows][0]).abs().max() > 0.2 * scale  # the rows do matter


@torch.inference_mode()
def test_decoding_step_by_step_matches_the_whole_sequence_for_mixed_personas(trained, with_rows):
    """The sampling loop's path (one token a step through the KV cache, no attention mask when no
    row is padded) gives the logits of a pass over the whole sequence, row by row, with three
    personas in the batch (token rows, plain LoRA, the bare base)."""
    full, plain = trained
    model, _ = load(full)
    decoder = fastdecode.Int8GPT2(model)
    adapters = [fastdecode.LoraWeights.load(with_rows), fastdecode.LoraWeights.load(plain), None]
    lora = fastdecode.stack_lora(adapters, decoder.vocab)
    ids = torch.randint(0, 400, (3, 12), generator=torch.Generator().manual_seed(4))
    whole = decoder.logits_of(ids, lora)
    cache = decoder.new_cache(3, 12)
    for t in range(12):
        position = torch.full((3, 1), t)
        step = decoder.forward(ids[:, t : t + 1], position, cache, t, None, lora)
        # Activations are quantized per call (a step's rows vs the whole sequence): int8 rounding differs.
        assert (step - whole[:, t]).abs().max() < 0.02 * whole.abs().max()


@torch.inference_mode()
def test_generic_path_applies_token_rows_and_keeps_their_persona_in_its_own_batch(trained, with_rows):
    """peft's mixed-adapter batches would give every row the active adapter's token rows, so a persona
    with rows samples alone; its rows are written into the shared embedding for its batch only."""
    from peft import PeftModel

    from bot.core.generation.generator import _group_by_model, _token_rows_applied

    full, plain = trained
    generic = Generator(Sampling(max_new_tokens=8, min_new_tokens=2), int8=False)
    requests = [
        GenerationRequest(with_rows, "the", 2),
        GenerationRequest(plain, "we", 2),
        GenerationRequest(full, "a", 1),
    ]
    answers = generic.generate_batch(requests)
    assert [len(a) for a in answers] == [2, 2, 1]
    loaded = [generic._load(r.model) for r in requests]
    assert (
        loaded[0].model is loaded[1].model
        and loaded[0].token_rows is not None
        and loaded[1].token_rows is None
    )
    assert sorted(_group_by_model([0, 1, 2], loaded)) == [[0], [1], [2]]
    ids = torch.randint(0, 400, (2, 16), generator=torch.Generator().manual_seed(2))
    for persona, path in ((loaded[0], with_rows), (loaded[1], plain)):
        persona.model.set_adapter(persona.adapter)
        with _token_rows_applied(persona.token_rows):
            ours = persona.model(ids).logits.float()
        reference = PeftModel.from_pretrained(load(full)[0], path).eval()(ids).logits
        assert (ours - reference).abs().max() < 0.05 * reference.abs().max()
    int8 = Generator(Sampling(max_new_tokens=8, min_new_tokens=2))
    assert [len(a) for a in int8.generate_batch(requests)] == [2, 2, 1]
    assert int8._load(with_rows).lora.token_ids is not None  # the int8 path takes personas with rows


@torch.inference_mode()
def test_int8_perplexity_is_within_one_percent_of_bf16_on_held_out_tweets(trained):
    model, tokenizer = load(trained[0])
    decoder = fastdecode.Int8GPT2(model)
    bf16 = load(trained[0])[0].to(torch.bfloat16)
    _, held_out = split_tweets(tiny_tweets(), 0.1, 42)
    losses = {"bf16": 0.0, "int8": 0.0}
    count = 0
    for row in encode_tweets(tokenizer, held_out):
        ids = torch.tensor([row[:64]])
        for name, logits in (("bf16", bf16(ids).logits[0]), ("int8", decoder.logits_of(ids)[0])):
            loss = torch.nn.functional.cross_entropy(logits[:-1].float(), ids[0, 1:], reduction="sum")
            losses[name] += float(loss)
        count += ids.shape[1] - 1
    ratio = torch.tensor((losses["int8"] - losses["bf16"]) / count).exp()  # perplexity ratio
    assert abs(float(ratio) - 1) < 0.01


@torch.inference_mode()
def test_sampled_tokens_follow_the_exact_nucleus_distribution(trained):
    """Chi-square of 6,000 first tokens drawn by the int8 path against the exact top-p probabilities."""
    model, tokenizer = load(trained[0])
    decoder = fastdecode.Int8GPT2(model)
    prompt = tokenizer(tokenizer.eos_token + "the", add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ]
    rows = 6000
    logits = decoder.logits_of(prompt)[0, -1]
    probs = torch.softmax(logits, -1)
    top_p = untied_top_p(probs, 0.95)
    nucleus = exact_nucleus(probs, top_p)

    torch.manual_seed(1)
    tokens = fastdecode.sample_int8(
        decoder,
        prompt.expand(rows, -1),
        torch.ones(rows, prompt.shape[1], dtype=torch.long),
        Sampling(top_p=top_p, max_new_tokens=1, min_new_tokens=0),
        stop_ids=torch.tensor([-1]),
        eos_id=tokenizer.eos_token_id,
    )
    counts = torch.bincount(tokens[:, 0], minlength=probs.shape[0]).double()
    assert counts[nucleus == 0].sum() == 0  # nothing outside the nucleus
    assert chi_square_p_value(counts, nucleus.double()) > 1e-3
    # The shared sampler, fed the float model's logits, draws from the same nucleus too.
    reference = top_p_sample(logits.expand(rows, -1), top_p)
    ref_counts = torch.bincount(reference, minlength=probs.shape[0]).double()
    assert chi_square_p_value(ref_counts, nucleus.double()) > 1e-3


@torch.inference_mode()
def test_both_decoding_paths_fit_a_long_prompt_to_the_positions_the_same_way(trained):
    """One rule (nucleus.fit_to_positions) on both paths: a prompt longer than the model's 64
    positions keeps its last 32 tokens and 32 new ones are sampled, int8 or not, so the same
    request gets the same length of answer on any CPU."""
    model, tokenizer = load(trained[0])
    decoder = fastdecode.Int8GPT2(model)
    assert decoder.positions == 64
    long_prompt = torch.randint(5, 400, (2, 100))  # longer than the model can attend to
    sampling = Sampling(max_new_tokens=160, min_new_tokens=160)  # no early stop: the length shows the rule
    common = dict(stop_ids=stop_token_ids(tokenizer), eos_id=tokenizer.eos_token_id)
    mask = torch.ones_like(long_prompt)
    int8_tokens = fastdecode.sample_int8(decoder, long_prompt, mask, sampling, **common)
    ids, fitted_mask, fitted = fit_to_positions(long_prompt, mask, sampling, model.config.n_positions)
    float_tokens = sample_tokens(model, ids, fitted_mask, fitted, **common)
    assert int8_tokens.shape == float_tokens.shape == (2, 32)

    generator = Generator(Sampling(max_new_tokens=160, min_new_tokens=4))
    assert generator.int8
    assert len(generator.generate(trained[1], "the " * 80, 1)) <= 1  # no index error past position 64


def test_mixed_personas_share_one_int8_pass_and_the_generic_path_still_works(trained):
    full, lora = trained
    int8 = Generator(Sampling(max_new_tokens=12, min_new_tokens=3), cache_size=4)
    generic = Generator(Sampling(max_new_tokens=12, min_new_tokens=3), cache_size=4, int8=False)
    requests = [GenerationRequest(lora, "the", 2), GenerationRequest(full, "we", 2)]
    for generator in (int8, generic):
        answers = generator.generate_batch(requests)
        assert [len(a) for a in answers] == [2, 2]
        assert all(t.startswith("the") for t in answers[0]) and all(t.startswith("we") for t in answers[1])
    assert isinstance(int8._personas[next(iter(int8._personas))].model, fastdecode.Int8GPT2)
    assert not isinstance(generic._personas[next(iter(generic._personas))].model, fastdecode.Int8GPT2)


@pytest.mark.parametrize(
    ("flags", "engine"), [({"amx_int8", "avx2"}, "onednn"), ({"avx2", "avx512f"}, "fbgemm"), (set(), None)]
)
def test_int8_engine_is_chosen_from_the_cpu_flags(monkeypatch, flags, engine):
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    assert devices.int8_engine() == engine
