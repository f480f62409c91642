"""Personas that grow: an update (new posts + a replay of old ones, from the current weights) against
training again from the base on everything, on the real SmolLM2-135M base.

For each person in ../shared/data/tweets/ the posts are cut in two: the first share is what v1 was
trained on, the rest arrives later. Three runs with the project's own `train()` and defaults:

- v1: the first share, as `/train new` does it;
- update: v1 continued on the new posts plus the replay sample, judged on v1's held-out posts plus a
  share of the new ones (`bot/core/training/update.py`, what `/train update` runs);
- retrain: the base trained on every training post of the union, judged on the same held-out posts.

It prints, per run, the posts trained on, wall time, held-out perplexity on all held-out posts and on
v1's own (forgetting: the update should stay within 2% of v1 there), and the time against the retrain.

    .venv/bin/python -m bench.update --persons katyperry
    .venv/bin/python -m bench.update --base <hf folder> --persons katyperry   # any base
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from bench.quality import SHARED_TWEETS, people
from bench.real_base import DEFAULT_CACHE, prepare_base


def timed_train(posts, out: Path, config, held_out=None, watch=None) -> tuple[dict[str, Any], float]:
    from bot.core.training.loop import train

    started = time.monotonic()
    result = train(posts, out, config, held_out=held_out, watch=watch)
    return result.metrics | {"train_posts": result.train_posts, "held_out_posts": result.held_out_posts}, (
        time.monotonic() - started
    )


def compare(
    base: str, tweets: list[str], first_share: float, work: Path, epochs: int
) -> list[dict[str, Any]]:
    """v1, its update with the rest of the posts, and a retrain on everything, as table rows."""
    from dataclasses import replace

    from bot.core.personas.keptposts import keep_posts, kept_posts
    from bot.core.training.recipe import TrainConfig
    from bot.core.training.update import plan_update

    config = TrainConfig(base_model=base, epochs=epochs)
    cut = int(len(tweets) * first_share)
    v1, v1_seconds = timed_train(tweets[:cut], work / "v1", config)
    keep_posts(work / "v1", v1["train_posts"], v1["held_out_posts"])
    plan = plan_update(kept_posts(work / "v1"), tweets[cut:], config.val_fraction, config.seed)
    resumed = replace(config, start_from=str(work / "v1"))
    update, update_seconds = timed_train(plan.train, work / "v2", resumed, plan.held_out, plan.old_held_out)
    retrain, retrain_seconds = timed_train(
        plan.all_train, work / "retrain", config, plan.held_out, plan.old_held_out
    )
    old = math.exp(v1["val_loss"])
    rows = [
        _row("v1 (first share)", len(v1["train_posts"]), v1_seconds, None, old, old),
        _row("update (new + replay)", len(plan.train), update_seconds, update, old, None),
        _row("retrain from the base on all", len(plan.all_train), retrain_seconds, retrain, old, None),
    ]
    rows[1]["vs_retrain"] = round(retrain_seconds / update_seconds, 2)
    return rows


def _row(name, posts, seconds, metrics, v1_old_ppl, old_ppl) -> dict[str, Any]:
    if metrics is not None:
        old_ppl = math.exp(metrics["old_held_out_loss"])
    return {
        "run": name,
        "train_posts": posts,
        "seconds": round(seconds, 1),
        "held_out_ppl": round(metrics["val_perplexity"], 2) if metrics else None,
        "old_held_out_ppl": round(old_ppl, 2),
        "old_change": f"{old_ppl / v1_old_ppl - 1:+.1%}",
        "epochs_run": metrics["epochs_run"] if metrics else None,
    }


def table(person: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"@{person}",
        "| run | posts trained on | wall time | held-out ppl (all) | ppl on v1's held-out | vs v1 | epochs | "
        "time vs retrain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['run']} | {r['train_posts']:,} | {r['seconds'] / 60:.1f} min | {r['held_out_ppl'] or ''} | "
        f"{r['old_held_out_ppl']} | {r['old_change']} | {r['epochs_run'] or ''} | "
        + (f"{r['vs_retrain']}x faster |" if r.get("vs_retrain") else "|")
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--persons", nargs="*", help="handles (default: every shared person)")
    p.add_argument("--base", help="a Hugging Face folder or hub id (default: the real SmolLM2 base)")
    p.add_argument("--first-share", type=float, default=0.7, help="share of the posts v1 is trained on")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--tweets-dir", type=Path, default=SHARED_TWEETS)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--results", type=Path, help="append the rows here as JSON lines")
    args = p.parse_args(argv)
    base = args.base or str(prepare_base(args.cache)[0])
    for person, tweets in people(args.tweets_dir).items():
        if args.persons and person not in args.persons:
            continue
        rows = compare(base, tweets, args.first_share, args.cache / "update" / person, args.epochs)
        print(table(person, rows), flush=True)
        if args.results:
            with args.results.open("a") as out:
                out.write(json.dumps({"person": person, "base": base, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
