"""Any causal LM as the base: tiny random Llama-, Qwen2- and GPT-NeoX-shaped models (the Llama one
with a SentencePiece-style tokenizer with byte fallback) train with LoRA and fully, sample, resume
from a checkpoint, and go out and back in through the hub import path."""

import asyncio
import shutil

import pytest

from bot.core.generation.decoding import Sampling, newline_pieces, stop_token_ids
from bot.core.generation.generator import Generator
from bot.core.service import PersonaService
from bot.core.training.adapters import lora_targets
from bot.core.training.loop import train
from bot.core.training.recipe import TrainConfig, TrainingCancelled
from tests.conftest import tiny_tweets
from tests.tiny_model import ARCHITECTURES, build_tiny_causal_lm


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch_model(request, tmp_path_factory) -> tuple[str, str]:
    return request.param, str(build_tiny_causal_lm(tmp_path_factory.mktemp(request.param), request.param))


def config(base: str, **kw) -> TrainConfig:
    defaults = dict(base_model=base, epochs=1, batch_size=8, block_size=64, learning_rate=3e-3, max_steps=6)
    return TrainConfig(**(defaults | kw))


class StopAfter:
    def __init__(self, step: int):
        self.step, self.cancel = step, __import__("threading").Event()

    def __call__(self, progress) -> None:
        if progress.phase == "training" and progress.step >= self.step:
            self.cancel.set()


def test_newlines_and_end_of_text_are_found_in_every_vocabulary(arch_model):
    from transformers import AutoTokenizer

    arch, folder = arch_model
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected_piece = {"llama": "<0x0A>", "qwen2": "Ċ", "gpt_neox": "Ċ"}[arch]
    assert expected_piece in newline_pieces(tokenizer)
    stops = set(stop_token_ids(tokenizer).tolist())
    newline_ids = tokenizer("one\ntwo", add_special_tokens=False)["input_ids"]
    assert tokenizer.eos_token_id in stops and stops & set(newline_ids)
    assert not stops & set(tokenizer("one two", add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("method", ["lora", "full"])
def test_train_resume_generate_export_and_import(arch_model, method, tmp_path, settings):
    from transformers import AutoModelForCausalLM

    arch, base = arch_model
    cfg = config(base, method=method, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_seconds=1e-9)
    stop = StopAfter(3)
    with pytest.raises(TrainingCancelled):
        train(tiny_tweets(), tmp_path / "first", cfg, progress=stop, cancel=stop.cancel)
    result = train(tiny_tweets(), tmp_path / "persona", cfg)
    assert result.metrics["resumed_from_step"] == 3 and result.metrics["steps"] == 6
    assert result.metrics["val_loss"] < result.metrics["initial_val_loss"]
    if method == "lora":  # the architecture's own linear layers were adapted, not GPT-2's names
        targets, transposed = lora_targets(AutoModelForCausalLM.from_pretrained(base))
        assert (targets, transposed) == ("all-linear", False)
        assert (tmp_path / "persona" / "adapter_config.json").is_file()

    generator = Generator(Sampling(max_new_tokens=12, min_new_tokens=3), cache_size=2)
    tweets = generator.generate(str(tmp_path / "persona"), "the", 2)
    assert len(tweets) == 2 and all(t.startswith("the") and "\n" not in t for t in tweets)

    # Export is the folder as it is; import reads it back from a local mirror of the hub.
    mirror = tmp_path / "mirror"
    shutil.copytree(tmp_path / "persona", mirror / "someone" / f"{arch}_{method}")

    async def round_trip():
        core = PersonaService(settings.replace(hf_local_mirror=str(mirror)))
        await core.start(run_queue=False)
        try:
            record = await core.import_model(1, f"someone/{arch}_{method}")
            _, again = await core.generate(1, record.handle, "the", 2)
            return again
        finally:
            await core.close()

    assert len(asyncio.run(round_trip())) == 2


def test_gpt2_keeps_its_lora_targets(tiny_base_model):
    from transformers import AutoModelForCausalLM

    targets, transposed = lora_targets(AutoModelForCausalLM.from_pretrained(tiny_base_model))
    assert targets == ["c_attn", "c_proj", "c_fc"] and transposed is True  # older personas still load
