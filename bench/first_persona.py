"""Time to a first persona with the default settings, measured on a short run and extrapolated.

Trains the GPT-2-124M-shaped model of bench/perf.py (random weights, tokenizer trained on the
corpus) on the shared Obama corpus with the bot's defaults (LoRA, then full fine-tuning) for a few
steps, measures tokens/s from the second step on, and extrapolates to the default epochs
(`recipe.default_epochs`).

    python bench/first_persona.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.perf import SHAPES, SHARED, build_model, machine, throughput  # noqa: E402
from bot.core.ingest.pipeline import ingest_path  # noqa: E402
from bot.core.training.data import encode_tweets, split_tweets  # noqa: E402
from bot.core.training.loop import train  # noqa: E402
from bot.core.training.recipe import TrainConfig, default_epochs  # noqa: E402


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--corpus", type=Path, default=SHARED / "barackobama_fivethirtyeight.csv")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    tweets = ingest_path(args.corpus).tweets
    defaults = TrainConfig()
    with tempfile.TemporaryDirectory(prefix="tweetalike-first-") as tmp:
        work = Path(tmp)
        corpus_text = work / "corpus.txt"
        corpus_text.write_text("\n".join(tweets), encoding="utf-8")
        base = build_model(work / "base", corpus_text, SHAPES["full"], peaked=False)
        from transformers import AutoTokenizer

        train_part, _ = split_tweets(tweets, defaults.val_fraction, defaults.seed)
        epoch_tokens = sum(len(s) for s in encode_tweets(AutoTokenizer.from_pretrained(base), train_part))
        print(f"machine: {machine()}")
        print(
            f"corpus: {args.corpus.name}, {len(tweets)} tweets, {epoch_tokens} tokens per epoch, "
            f"{default_epochs('lora', len(tweets))} epochs by default for LoRA, "
            f"{default_epochs('full', len(tweets))} for full; measured over {args.steps} steps, extrapolated"
        )
        print("| method | tokens/s | one epoch | default run (all epochs) |")
        print("| --- | --- | --- | --- |")
        for method in ("lora", "full"):
            config = TrainConfig(base_model=base, method=method, max_steps=args.steps + 1)
            result = train(tweets, work / method, config)
            rate = throughput(result.history)
            total = epoch_tokens * default_epochs(method, len(tweets)) / rate
            print(
                f"| {method} ({result.metrics['precision']}) | {rate:.0f} "
                f"| {epoch_tokens / rate / 60:.1f} min | {total / 60:.0f} min |",
                flush=True,
            )


if __name__ == "__main__":
    main()
