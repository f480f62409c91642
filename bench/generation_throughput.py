"""Generation throughput per core: tweets per second with the bot's own Generator.

Generation stays in the bot process (one generation thread, requests that arrive together
batched into one forward pass per token). This measures what that costs in CPU, to size a
deployment and to judge what separate generation workers would add: one process with 1 and
2 torch threads, and two processes of one thread each (what two workers on two cores would do),
each at batch 1 (one /impersonate of one tweet at a time) and batch 8 (requests batched).

The model has GPT-2-124M's shapes with random weights (the speed of a matrix does not depend on
its values) and sharpened logits, as in bench/perf.py. Every tweet is exactly TOKENS tokens, so
the rows compare the same work. Configurations run in fresh processes, interleaved over rounds.

    python bench/generation_throughput.py            # about 3 minutes on 2 cores
    python bench/generation_throughput.py --quick    # small shapes, under a minute
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

CONFIGS = [  # (torch threads per process, processes, tweets per batch)
    (1, 1, 1),
    (2, 1, 1),
    (1, 2, 1),
    (1, 1, 8),
    (2, 1, 8),
    (1, 2, 8),
]


def measure(model_dir: str, threads: int, batch: int, tokens: int, seconds: float, barrier, results) -> None:
    """One process: load the persona, wait for the others, then generate for `seconds`."""
    import torch

    from bot.core.generation.generator import Generator, Sampling

    torch.set_num_threads(threads)
    generator = Generator(Sampling(max_new_tokens=tokens, min_new_tokens=tokens), cache_size=2)
    generator.generate(model_dir, "", batch)  # load and warm up outside the timing
    barrier.wait()
    made, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        made += len(generator.generate(model_dir, "", batch))
    weights = "int8" if generator.int8 else str(generator.dtype).removeprefix("torch.")  # GPT-2: int8 decoder
    results.put((made, time.perf_counter() - start, weights))


def run_config(
    model_dir: str, config: tuple[int, int, int], tokens: int, seconds: float
) -> tuple[float, str]:
    """Tweets per second of all the config's processes together, and the weights' dtype."""
    threads, processes, batch = config
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    arguments = (model_dir, threads, batch, tokens, seconds, barrier, results)
    workers = [ctx.Process(target=measure, args=arguments) for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(made / elapsed for made, elapsed, _ in outcomes), outcomes[0][2]


def build(work: Path, quick: bool) -> str:
    from perf import SHAPES, build_model

    shape = SHAPES["quick" if quick else "full"]
    return build_model(work / "model", ROOT / "tests" / "data" / "tiny_corpus.txt", shape)


def print_table(rates: dict, dtype: str, tokens: int) -> None:
    print(f"\nGeneration throughput ({dtype} weights, {tokens}-token tweets, {os.cpu_count()} CPUs)\n")
    print("| torch threads | processes | batch | cores | tweets/s | tokens/s | tweets/s per core |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (threads, processes, batch), values in rates.items():
        rate = statistics.mean(values)
        cores = threads * processes
        cells = [
            threads,
            processes,
            batch,
            cores,
            f"{rate:.2f}",
            f"{rate * tokens:.0f}",
            f"{rate / cores:.2f}",
        ]
        print("| " + " | ".join(map(str, cells)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model shapes, short runs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per configuration")
    parser.add_argument("--tokens", type=int, default=40, help="tokens per tweet (~30-50 in a tweet)")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    rates: dict[tuple[int, int, int], list[float]] = {config: [] for config in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build(Path(tmp), args.quick)
        for round_number in range(args.rounds):
            for config in CONFIGS:
                rate, dtype = run_config(model_dir, config, args.tokens, seconds)
                rates[config].append(rate)
                print(f"round {round_number + 1} {config}: {rate:.2f} tweets/s", file=sys.stderr, flush=True)
    print_table(rates, dtype, args.tokens)


if __name__ == "__main__":
    main()
