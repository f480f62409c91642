"""Training speed on this machine: tokens per second of LoRA and full fine-tuning, with the matrix
product rate measured in the same run as the physical floor.

Each variant trains `--steps` optimizer steps of the project's own `train()` (the default batch of 8
rows x 128 tokens, packed, bf16 autocast where the CPU has it) on one shared person's posts, in a
process of its own, run after run interleaved (`--repeats`). Speed is taken from the step timings
after the first `--warmup` steps, so loading and evaluation are left out. Achieved GFLOPS count the
useful arithmetic: 6 x parameters x tokens/s for a full fine-tune, 4 x for LoRA (no weight gradients
for the base), against a bf16 (or fp32) matrix product of the training's shapes measured here.

    .venv/bin/python -m bench.train_speed                        # the real SmolLM2-135M base
    .venv/bin/python -m bench.train_speed --gpt2-shapes           # GPT-2-124M shapes, random weights
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.quality import SHARED_TWEETS, people
from bench.real_base import DEFAULT_CACHE, prepare_base

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {
    "full fine-tune": {"method": "full"},
    "full fine-tune, the library's loss": {"method": "full", "chunked_loss": False},
    "LoRA as before: dropout 0.05, peft's token rows": {
        "method": "lora",
        "lora_dropout": 0.05,
        "fast_token_rows": False,
    },
    "LoRA, dropout 0.05": {"method": "lora", "lora_dropout": 0.05},
    "LoRA (default: no dropout, fast token rows)": {"method": "lora"},
    "LoRA, no token rows": {"method": "lora", "lora_token_rows": 0},
    "LoRA, the library's loss": {"method": "lora", "chunked_loss": False},
    "LoRA, peft's own layers": {"method": "lora", "fast_lora": False},
}


def one(job: dict[str, Any]) -> dict[str, Any]:
    """One variant, in this process: tokens/s over the timed steps."""
    import torch

    from bot.core.training.loop import train
    from bot.core.training.recipe import TrainConfig

    torch.set_num_threads(job["threads"])
    tweets = json.loads(Path(job["tweets"]).read_text())
    config = TrainConfig(
        base_model=job["base"], epochs=1, patience=0, max_steps=job["steps"], **job["settings"]
    )
    with tempfile.TemporaryDirectory() as out:
        result = train(tweets, out, config)
    steps = [h for h in result.history if "train_loss" in h]
    first, last = steps[job["warmup"] - 1], steps[-1]
    tokens_per_second = (last["tokens"] - first["tokens"]) / (last["time"] - first["time"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "tokens_per_second": tokens_per_second,
        "precision": result.metrics["precision"],
        "peak_mib": peak,
    }


def matmul_gflops(precision: str, rows: int, width: int, threads: int) -> float:
    """The rate of one of the training's matrix products ([rows x width] @ [width x 4 width])."""
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    a, b = torch.randn(rows, width, dtype=dtype), torch.randn(width, 4 * width, dtype=dtype)
    for _ in range(3):
        a @ b
    runs = 20
    started = time.perf_counter()
    for _ in range(runs):
        a @ b
    return 2 * rows * width * 4 * width * runs / (time.perf_counter() - started) / 1e9


def run_isolated(job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.train_speed", "--one", json.dumps(job)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gpt2_shapes(folder: Path) -> str:
    """A GPT-2-124M-shaped model with random weights and GPT-2's tokenizer (the speed of a matrix does
    not depend on its values)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    if not (folder / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(ROOT.parent / "shared" / "models" / "gpt2-tokenizer")
        GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def parameters(base: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--person", default="katyperry")
    p.add_argument("--gpt2-shapes", action="store_true")
    p.add_argument("--base", help="any Hugging Face folder or hub id instead")
    p.add_argument("--variants", nargs="*", help="substrings of variant names to run (default: all)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    if args.base:
        base = args.base
    elif args.gpt2_shapes:
        base = gpt2_shapes(args.cache / "gpt2-shapes")
    else:
        base = str(prepare_base(args.cache)[0])
    tweets_file = args.cache / f"{args.person}-posts.json"
    tweets_file.write_text(json.dumps(people(SHARED_TWEETS)[args.person]))
    job = {"base": base, "tweets": str(tweets_file), "steps": args.steps, "warmup": args.warmup}
    job["threads"] = args.threads
    chosen = {
        name: settings
        for name, settings in VARIANTS.items()
        if not args.variants or name == "full fine-tune" or any(part in name for part in args.variants)
    }  # the full fine-tune always runs: the other rows are read against it
    speeds: dict[str, list[float]] = {name: [] for name in chosen}
    peaks: dict[str, list[float]] = {name: [] for name in chosen}
    precision = "fp32"
    for _ in range(args.repeats):
        for name, settings in chosen.items():
            result = run_isolated(job | {"settings": settings})
            speeds[name].append(result["tokens_per_second"])
            peaks[name].append(result["peak_mib"])
            precision = result["precision"]
    print(table(base, speeds, peaks, precision, parameters(base), args.threads))


def table(
    base: str,
    speeds: dict[str, list[float]],
    peaks: dict[str, list[float]],
    precision: str,
    n_params: int,
    threads: int,
) -> str:
    floor = matmul_gflops(precision, 1024, 768, threads)
    full = statistics.median(speeds["full fine-tune"])
    lines = [
        f"base {base} ({n_params / 1e6:.1f} M parameters), {threads} threads, {precision}; "
        f"matrix product [1024 x 768] @ [768 x 3072] in {precision}: {floor:.0f} GFLOPS",
        "| variant | tokens/s (median) | runs | vs full | achieved GFLOPS | share of the matrix product "
        "| peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in speeds.items():
        rate = statistics.median(runs)
        flops = (6 if name.startswith("full") else 4) * n_params * rate / 1e9
        lines.append(
            f"| {name} | {rate:.0f} | {', '.join(f'{r:.0f}' for r in runs)} | {rate / full:.2f}x | "
            f"{flops:.0f} | {flops / floor:.0%} | {max(peaks[name]):,.0f} MiB |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
