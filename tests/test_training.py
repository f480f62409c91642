"""Real training of the tiny GPT-2 through the same from_pretrained path as `gpt2`."""

import dataclasses
import json
import threading

import pytest

from bot.core.errors import TrainingError
from bot.core.generation.generator import GenerationRequest, Generator, Sampling, clean_generated
from bot.core.training.checkpoint import checkpoint_step
from bot.core.training.data import encode_tweets, pack_blocks
from bot.core.training.loop import train
from bot.core.training.recipe import TrainConfig, TrainingCancelled
from tests.conftest import shared_corpus, tiny_tweets


def config(base, **kw) -> TrainConfig:
    defaults = dict(base_model=base, epochs=1, batch_size=8, block_size=64, learning_rate=3e-3, max_steps=15)
    return TrainConfig(**(defaults | kw))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_lowers_validation_loss_on_a_real_corpus(tiny_base_model, tmp_path, method):
    from bot.core.ingest.pipeline import ingest_path

    tweets = ingest_path(shared_corpus("barackobama_fivethirtyeight.csv")).tweets
    seen = []
    result = train(tweets, tmp_path / "out", config(tiny_base_model, method=method), progress=seen.append)
    m = result.metrics
    assert m["val_loss"] < m["initial_val_loss"]
    assert m["val_perplexity"] > 1 and m["steps"] == 15
    assert m["val_tweets"] == round(len(tweets) * 0.1)
    steps = [p.step for p in seen if p.phase == "training"]
    assert steps == list(range(1, 16))
    assert all(p.eta_seconds is not None and p.loss is not None for p in seen if p.phase == "training")
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert "tokenizer.json" in files and "training.json" in files
    assert ("adapter_config.json" in files) == (method == "lora")
    if method == "lora":
        adapter = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
        assert adapter["fan_in_fan_out"] is True and adapter["base_model_name_or_path"] == tiny_base_model
    info = json.loads((tmp_path / "out" / "training.json").read_text())
    assert info["config"]["seed"] == 42 and info["history"][0]["step"] == 0


def test_lora_adapter_is_stored_in_bf16_without_changing_its_loss(tiny_base_model, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.core.training.data import split_tweets
    from bot.core.training.loop import evaluate

    cfg = config(tiny_base_model, max_steps=20)
    result = train(tiny_tweets(), tmp_path / "out", cfg)
    weights = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert weights and all(t.dtype == torch.bfloat16 for n, t in weights.items() if "lora_" in n)
    # The saved (rounded) adapter gives the validation loss measured before rounding.
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    base = AutoModelForCausalLM.from_pretrained(tiny_base_model)
    model = PeftModel.from_pretrained(base, tmp_path / "out", autocast_adapter_dtype=False)
    for parameter in model.parameters():
        parameter.data = parameter.data.float()
    _, val = split_tweets(tiny_tweets(), cfg.val_fraction, cfg.seed)
    blocks = pack_blocks(encode_tweets(tokenizer, val), cfg.block_size)
    reloaded = evaluate(model, blocks, cfg.batch_size, tokenizer.eos_token_id, torch.device("cpu"), None)
    assert reloaded == pytest.approx(result.metrics["val_loss"], rel=0.01)


def test_generation_returns_clean_tweets(tiny_base_model, tmp_path):
    train(tiny_tweets(), tmp_path / "lora", config(tiny_base_model, max_steps=5))
    train(tiny_tweets(), tmp_path / "full", config(tiny_base_model, method="full", max_steps=5))
    gen = Generator(Sampling(max_new_tokens=20, min_new_tokens=3), cache_size=4)
    for folder in ("lora", "full"):
        tweets = gen.generate(tmp_path / folder, prompt="We love", n=3)
        assert len(tweets) == 3
        for tweet in tweets:
            assert tweet.startswith("We love") and len(tweet) > len("We love")
            assert "\n" not in tweet and "<|endoftext|>" not in tweet and "\ufffd" not in tweet
    # Two personas on one base share it; a mixed batch answers each request.
    (tmp_path / "lora2").symlink_to(tmp_path / "lora")
    out = gen.generate_batch(
        [GenerationRequest(str(tmp_path / "lora"), "", 2), GenerationRequest(str(tmp_path / "lora2"), "I", 1)]
    )
    assert [len(o) for o in out] == [2, 1] and out[1][0].startswith("I")
    assert len(gen._bases) == 1


def test_generation_cache_is_lru_bounded(tiny_base_model, tmp_path):
    for i in range(3):
        train(tiny_tweets(), tmp_path / f"m{i}", config(tiny_base_model, max_steps=1, seed=i))
    gen = Generator(Sampling(max_new_tokens=5, min_new_tokens=1), cache_size=2)
    for i in range(3):
        gen.generate(tmp_path / f"m{i}", n=1)
    assert gen.loaded_count() == 2
    gen.forget(tmp_path / "m2")
    assert gen.loaded_count() == 1


def test_cancel_between_steps(tiny_base_model, tmp_path):
    cancel = threading.Event()

    def progress(p):
        if p.step == 2:
            cancel.set()

    with pytest.raises(TrainingCancelled):
        train(tiny_tweets(), tmp_path / "out", config(tiny_base_model), progress=progress, cancel=cancel)


def test_unknown_base_model_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="Could not load the base model"):
        train(tiny_tweets(), tmp_path / "out", config(str(tmp_path / "no-such-model")))


def test_tweets_are_wrapped_in_end_of_text_and_packed(tiny_base_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base_model)
    encoded = encode_tweets(tok, ["hello there", "bye"])
    eos = tok.eos_token_id
    assert all(seq[0] == eos and seq[-1] == eos for seq in encoded)
    blocks = pack_blocks(encoded, 4)
    assert sum(len(b) for b in blocks) == sum(len(s) for s in encoded)
    assert all(len(b) == 4 for b in blocks[:-1])


def test_clean_generated_follows_huggingtweets():
    assert clean_generated("My dream", " is big<|endoftext|>next tweet") == "My dream is big"
    assert clean_generated("", " first line\nsecond") == "first line"
    assert clean_generated("", "a\x07b\ufffd  c") == "ab c"


def test_recited_training_tweets_are_detected(tmp_path):
    from bot.core.generation.safety import MemorizationIndex, save_index, strip_links

    corpus = ["I love a long walk in the park with my dog every sunday morning", "short one"]
    save_index(corpus, tmp_path)
    index = MemorizationIndex.load(tmp_path)
    assert index.is_copy("I love a long walk in the park with my dog every sunday morning")
    assert index.is_copy("i LOVE a long walk in the park with my dog every sunday")  # near copy
    assert index.is_copy("short one")
    assert not index.is_copy("A brand new thought about coffee and rockets at dawn today")
    assert strip_links("join discord.gg/abc now https://t.co/x ok") == "join now ok"
    assert strip_links("see discord.com/invite/xyz") == "see"


class StopAfter:
    """A progress callback that cancels the run once it reaches `step` (a stand-in for a crash)."""

    def __init__(self, step: int):
        self.step, self.cancel = step, threading.Event()

    def __call__(self, progress) -> None:
        if progress.phase == "training" and progress.step >= self.step:
            self.cancel.set()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_interrupted_training_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    tiny_base_model, tmp_path, method
):
    import torch

    # Two epochs, a checkpoint after every step, stopped after step 8 (in the second epoch).
    cfg = config(
        tiny_base_model,
        method=method,
        epochs=2,
        max_steps=0,
        batch_size=16,
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_seconds=1e-9,
    )
    tweets = tiny_tweets()
    stop = StopAfter(8)
    with pytest.raises(TrainingCancelled):
        train(tweets, tmp_path / "first", cfg, progress=stop, cancel=stop.cancel)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["step-00000008.pt"]  # older ones removed
    saved = checkpoint_step(tmp_path / "ckpt")
    assert saved == 8

    seen = []
    resumed = train(tweets, tmp_path / "resumed", cfg, progress=seen.append)
    steps = [p.step for p in seen if p.phase == "training"]
    total = resumed.metrics["steps"]
    assert steps == list(range(saved + 1, total + 1)) and resumed.metrics["resumed_from_step"] == saved

    straight = train(tweets, tmp_path / "straight", dataclasses.replace(cfg, checkpoint_dir=None))
    assert straight.metrics["steps"] == total and straight.metrics["resumed_from_step"] is None
    # Same data order, same optimizer state, same dropout masks: the same model.
    assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], rel=1e-4)
    assert [h["train_loss"] for h in resumed.history if "train_loss" in h] == pytest.approx(
        [h["train_loss"] for h in straight.history if "train_loss" in h], rel=1e-4
    )
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "resumed" / weights), load_file(tmp_path / "straight" / weights)
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


def test_checkpoint_of_other_data_or_settings_is_ignored(tiny_base_model, tmp_path):
    cfg = config(tiny_base_model, max_steps=6, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_seconds=1e-9)
    stop = StopAfter(3)
    with pytest.raises(TrainingCancelled):
        train(tiny_tweets(), tmp_path / "a", cfg, progress=stop, cancel=stop.cancel)
    # Other tweets: a fresh start, not the old run's weights.
    other = train(tiny_tweets()[:-5], tmp_path / "b", cfg)
    assert other.metrics["resumed_from_step"] is None and other.metrics["steps"] == 6
    # A damaged checkpoint is ignored too, not a failed job.
    (tmp_path / "ckpt" / "step-00000099.pt").write_bytes(b"not a checkpoint")
    again = train(tiny_tweets(), tmp_path / "c", cfg)
    assert again.metrics["resumed_from_step"] is None and again.metrics["steps"] == 6


def test_a_checkpoint_that_cannot_be_written_does_not_fail_the_training(tiny_base_model, tmp_path):
    blocker = tmp_path / "ckpt"
    blocker.write_text("a file where the checkpoint folder should be")
    cfg = config(tiny_base_model, max_steps=4, checkpoint_dir=str(blocker), checkpoint_seconds=1e-9)
    result = train(tiny_tweets(), tmp_path / "out", cfg)
    assert result.metrics["steps"] == 4 and (tmp_path / "out" / "adapter_config.json").is_file()


def test_training_and_generation_can_load_models_at_the_same_time(tiny_base_model, tmp_path):
    """The bot trains in one thread pool and generates in another: a persona loading while a
    training loads (or runs) must break neither (from_pretrained changes process-wide torch state)."""
    import shutil

    persona = train(tiny_tweets(), tmp_path / "persona", config(tiny_base_model, max_steps=1)).output_dir
    errors: list[str] = []

    def trainer(i: int) -> None:
        try:
            train(tiny_tweets(), tmp_path / f"t{i}", config(tiny_base_model, max_steps=8))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(f"train: {exc!r}")

    def generator(i: int) -> None:
        try:
            # Cache of one: every persona reloads the base model too.
            gen = Generator(Sampling(max_new_tokens=4, min_new_tokens=1), cache_size=1)
            for j in range(3):
                copy = tmp_path / f"g{i}-{j}"
                shutil.copytree(persona, copy)
                assert gen.generate(copy, "", 1)
                assert gen.generate(tiny_base_model, "", 1)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"generate: {exc!r}")

    for round_ in range(4):
        threads = [
            threading.Thread(target=trainer, args=(round_,)),
            threading.Thread(target=generator, args=(round_,)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_the_best_epoch_is_the_one_saved_and_reported(tiny_base_model, tmp_path):
    """A learning rate far too high makes later epochs worse: the saved weights are the best epoch's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.core.training.data import split_tweets
    from bot.core.training.loop import evaluate

    cfg = config(tiny_base_model, method="full", epochs=3, max_steps=0, learning_rate=0.05, warmup_fraction=0)
    result = train(tiny_tweets(), tmp_path / "out", cfg)
    m = result.metrics
    epochs = [h for h in result.history if "epoch" in h]
    assert [h["epoch"] for h in epochs] == [1, 2, 3]
    best = min(epochs, key=lambda h: h["val_loss"])
    assert m["best_epoch"] == best["epoch"] < 3 and m["val_loss"] == best["val_loss"] < m["last_val_loss"]
    info = json.loads((tmp_path / "out" / "training.json").read_text())
    assert info["metrics"]["best_epoch"] == m["best_epoch"]
    # The folder holds that epoch's weights: reloaded, they give its validation loss.
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    _, val = split_tweets(tiny_tweets(), cfg.val_fraction, cfg.seed)
    blocks = pack_blocks(encode_tweets(tokenizer, val), cfg.block_size)
    reloaded = evaluate(model, blocks, cfg.batch_size, tokenizer.eos_token_id, torch.device("cpu"), None)
    assert reloaded == pytest.approx(m["val_loss"], rel=0.02)
    last = train(tiny_tweets(), tmp_path / "last", dataclasses.replace(cfg, keep_best=False))
    assert last.metrics["val_loss"] == last.metrics["last_val_loss"] > m["val_loss"]


@pytest.mark.parametrize(
    "options",
    [{"lora_train_norms": True}, {"use_rslora": True}, {"use_dora": True, "lora_train_norms": True}],
)
def test_lora_variants_train_and_save_what_they_train(tiny_base_model, tmp_path, options):
    from safetensors.torch import load_file

    result = train(tiny_tweets(), tmp_path / "out", config(tiny_base_model, max_steps=6, **options))
    assert result.metrics["val_loss"] < result.metrics["initial_val_loss"]
    names = set(load_file(tmp_path / "out" / "adapter_model.safetensors"))
    assert any("lora_A" in n for n in names)
    if options.get("lora_train_norms"):
        assert any("ln_f" in n for n in names) and any(n.endswith(".bias") and "lora" not in n for n in names)


def test_fp16_training_uses_a_grad_scaler(tiny_base_model, tmp_path):
    """fp16 autocast (CUDA GPUs without bf16) scales the loss so small gradients do not underflow;
    run here on the CPU, where torch also autocasts to fp16."""
    seen = []
    result = train(
        tiny_tweets(),
        tmp_path / "out",
        config(tiny_base_model, method="full", precision="fp16"),
        progress=seen.append,
    )
    assert result.metrics["precision"] == "float16"
    assert result.metrics["val_loss"] < result.metrics["initial_val_loss"]


def test_lora_token_rows_train_the_most_frequent_tokens_and_reload(tiny_base_model, tmp_path):
    """lora_token_rows (opt-in): the embedding rows of the person's most frequent tokens are trained,
    tied to the output layer, saved in bf16, and a reload gives the measured validation loss."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.core.training.data import frequent_tokens, split_tweets
    from bot.core.training.loop import evaluate

    assert frequent_tokens([[5, 7, 7], [7, 9, 5]], 2) == [5, 7]
    cfg = config(tiny_base_model, max_steps=20, lora_token_rows=50)
    result = train(tiny_tweets(), tmp_path / "out", cfg)
    assert result.metrics["val_loss"] < result.metrics["initial_val_loss"]
    rows = [
        t
        for n, t in load_file(tmp_path / "out" / "adapter_model.safetensors").items()
        if "trainable_tokens_delta" in n
    ]
    assert len(rows) == 1 and rows[0].shape[0] == 50 and rows[0].dtype == torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_base_model), tmp_path / "out", autocast_adapter_dtype=False
    )
    for parameter in model.parameters():
        parameter.data = parameter.data.float()
    _, val = split_tweets(tiny_tweets(), cfg.val_fraction, cfg.seed)
    blocks = pack_blocks(encode_tweets(tokenizer, val), cfg.block_size)
    reloaded = evaluate(model, blocks, cfg.batch_size, tokenizer.eos_token_id, torch.device("cpu"), None)
    assert reloaded == pytest.approx(result.metrics["val_loss"], rel=0.01)


def test_the_batch_grows_to_fill_a_gpu_but_keeps_enough_updates():
    from bot.core.devices import MIN_UPDATES, fitted_batch_size

    gib = 1 << 30
    assert fitted_batch_size(8, 10_000, 4, 128, None) == 8  # not a GPU: as asked
    # 10,000 tweets (~1,800 rows of 128 tokens an epoch), 4 epochs, an 80 GB GPU: 4x larger batches
    # keep >= MIN_UPDATES updates; 8x would leave too few.
    fitted = fitted_batch_size(8, 1_800, 4, 128, 80 * gib)
    assert fitted == 32 and -(-1_800 // fitted) * 4 >= MIN_UPDATES > -(-1_800 // (2 * fitted)) * 4
    assert fitted_batch_size(8, 60, 4, 128, 80 * gib) == 8  # 300 tweets: every update counts
    assert fitted_batch_size(8, 100_000, 4, 128, 80 * gib) == 128  # the cap
    assert fitted_batch_size(8, 100_000, 4, 128, 4 * gib) == 16  # half of a small GPU's memory


def test_cpu_training_uses_plain_attention_for_short_rows_with_the_same_loss(tiny_base_model):
    import torch

    from bot.core.devices import training_attention
    from bot.core.training.loop import load_base_model

    cpu = torch.device("cpu")
    assert training_attention(cpu, 128) == "eager"
    assert training_attention(cpu, 512) is None  # there the fused kernel is faster and holds less
    assert training_attention(torch.device("cuda"), 128) is None
    ids = torch.arange(2 * 48).reshape(2, 48) % 200 + 5
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0  # a padded row: both implementations must mask it the same way
    losses = []
    for attention in (None, training_attention(cpu, 64)):
        model, _ = load_base_model(tiny_base_model, cpu, attention=attention)
        assert model.config._attn_implementation == (attention or "sdpa")
        with torch.no_grad():
            losses.append(float(model(input_ids=ids, attention_mask=mask, labels=ids).loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


class _SeenTexts:
    """A tokenizer that records the texts the generator hands the model."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, []

    def __call__(self, texts, **kw):
        self.texts += texts
        return self.tokenizer(texts, **kw)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_a_fresh_post_follows_one_of_the_personas_training_posts(tiny_base_model, tmp_path):
    from bot.core.personas.keptposts import keep_posts

    for folder in ("kept", "none"):
        train(tiny_tweets(), tmp_path / folder, config(tiny_base_model, max_steps=1))
    train_posts = ["first kept post", "second kept post", "third kept post"]
    keep_posts(tmp_path / "kept", train_posts, ["a held-out post"])
    gen = Generator(Sampling(max_new_tokens=4, min_new_tokens=1), cache_size=4)
    eos = "<|endoftext|>"
    for folder in ("kept", "none"):
        gen._load(str(tmp_path / folder)).tokenizer = seen = _SeenTexts(
            gen._load(str(tmp_path / folder)).tokenizer
        )
        gen.generate(tmp_path / folder, prompt="We", n=12)
        gen.generate_batch([GenerationRequest(str(tmp_path / folder), "", 1, context="the message")])
        fresh, answered = seen.texts[:12], seen.texts[-1]
        # As in training (<eos>tweet<eos><eos>next...), never the held-out posts the report scores.
        expected = {f"{eos}{p}{eos}{eos}We" for p in train_posts} if folder == "kept" else {f"{eos}We"}
        assert set(fresh) <= expected and (folder == "none" or len(set(fresh)) > 1)
        assert answered == f"{eos}the message{eos}{eos}"  # an answer reads the message, not a lead-in
