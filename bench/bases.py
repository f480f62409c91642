"""Speed of candidate base models on this machine: GPT-2 (the default) and modern small bases.

Each model is built from its published configuration with random weights (the hub cannot be
reached here; the speed of a matrix product does not depend on its values) and measured the way
the bot uses it: LoRA training steps (the architecture's LoRA targets, bf16 autocast where the CPU
computes bf16 natively) and sampling 5 rows with a KV cache. Models are measured in rounds, one
after another, and the median taken, so drift on a shared machine falls on all of them.

    python bench/bases.py            # a few minutes on 2 cores
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from bot.core.devices import autocast, autocast_dtype, int8_engine  # noqa: E402
from bot.core.generation.decoding import Sampling, sample_tokens  # noqa: E402
from bot.core.training.adapters import wrap_lora  # noqa: E402
from bot.core.training.recipe import TrainConfig  # noqa: E402

# Shapes from each model's config.json on the hub.
SHAPES = {
    "gpt2 (default)": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257)),
    "HuggingFaceTB/SmolLM2-135M": (
        "llama",
        dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
        ),
    ),
    "HuggingFaceTB/SmolLM2-360M": (
        "llama",
        dict(
            hidden_size=960,
            intermediate_size=2560,
            num_hidden_layers=32,
            num_attention_heads=15,
            num_key_value_heads=5,
            vocab_size=49152,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
        ),
    ),
    "Qwen/Qwen2.5-0.5B": (
        "qwen2",
        dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
        ),
    ),
}


def build(model_type: str, shape: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **shape)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def train_tokens_per_second(model, rows: int, length: int, steps: int) -> float:
    device = torch.device("cpu")
    dtype = autocast_dtype("auto", device)
    lora = wrap_lora(model, TrainConfig())
    params = [p for p in lora.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, 1000, (rows, length))
    times = []
    for _ in range(steps + 1):  # the first step pays one-off warm-up
        started = time.perf_counter()
        with autocast(device, dtype):
            loss = lora(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    lora.unload()  # back to the bare model for the decoding measure
    return rows * length / statistics.median(times[1:])


@torch.no_grad()  # not inference_mode: the same model is trained again in the next round
def decode_ms_per_step(model, new_tokens: int) -> float:
    dtype = autocast_dtype("auto", torch.device("cpu")) or torch.float32
    model = model.to(dtype).eval()
    ids = torch.zeros((5, 1), dtype=torch.long)
    warm_up = Sampling(max_new_tokens=2, min_new_tokens=2)  # the first call prepacks bf16 weights
    sample_tokens(model, ids, torch.ones_like(ids), warm_up, stop_ids=torch.tensor([0]), eos_id=0)
    sampling = Sampling(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    started = time.perf_counter()
    sample_tokens(model, ids, torch.ones_like(ids), sampling, stop_ids=torch.tensor([0]), eos_id=0)
    model.float()
    return 1000 * (time.perf_counter() - started) / new_tokens


def main() -> None:
    import argparse

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    models = {name: build(*spec) for name, spec in SHAPES.items()}
    train_speed = {name: [] for name in models}
    decode_speed = {name: [] for name in models}
    for round_ in range(args.rounds):
        for name, model in models.items():
            print(f"round {round_ + 1}: {name}", file=sys.stderr, flush=True)
            train_speed[name].append(train_tokens_per_second(model, 1, 64, 2))
            decode_speed[name].append(decode_ms_per_step(model, 8))
    threads = torch.get_num_threads()
    bf16 = autocast_dtype("auto", torch.device("cpu"))
    print(f"{threads} threads; bf16 autocast: {bf16}; int8 engine: {int8_engine()}")
    print(
        "| base | parameters | bf16 weights | LoRA training tokens/s | vs GPT-2 "
        "| ms per decoding step (5 rows) | vs GPT-2 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    gpt2 = next(iter(models))
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        tps, ms = statistics.median(train_speed[name]), statistics.median(decode_speed[name])
        base_tps, base_ms = statistics.median(train_speed[gpt2]), statistics.median(decode_speed[gpt2])
        print(
            f"| {name} | {params / 1e6:.0f} M | {params * 2 / 2**20:.0f} MiB | {tps:.0f} "
            f"| {tps / base_tps:.2f}x | {ms:.0f} | {base_ms / ms:.2f}x |"
        )


if __name__ == "__main__":
    main()
