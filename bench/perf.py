"""Our training and generation path against the baseline, side by side, in one run.

Baseline: huggingtweets' recipe as plain transformers code: fp32 weights, full fine-tuning,
one tweet per row padded to the batch's longest, and `model.generate()` in eager mode.
Ours: LoRA adapters, bf16 where the CPU computes it natively, tweets packed into blocks, our
sampling loop, and personas batched across adapters on one shared base.

Both run on the same corpus (../shared/data/tweets/, Obama by default), with a GPT-2-124M-shaped
model with random weights (the speed of a matrix does not depend on its values). The final
layer norm is scaled so that next-token distributions are about as peaked as a trained
model's (random weights would otherwise give a uniform distribution, which no real model has
and which makes nucleus sampling artificially expensive). Quality is measured separately on a
small GPT-2-shaped model that is first pre-trained on other people's tweets, so both paths
fine-tune from the same start.

    python bench/perf.py            # full run (about 17 minutes on 2 cores)
    python bench/perf.py --quick    # CI-sized shapes, about 3 minutes
    python bench/perf.py --decoding # only the decoding engines (GPT-2-124M shapes), about 8 minutes

The decoding table (bench/decoding.py: each engine in its own process, interleaved run by run)
adds CTranslate2 int8 as the peer engine (bench/requirements.txt): the same random-weight model
converted with its transformers converter, offline; the int8 floor (every weight read once per
step at the machine's measured bandwidth), and where a step of our int8 decoder goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from bench import decoding  # noqa: E402
from bench.decoding import baseline_generate  # noqa: E402
from bot.core.devices import int8_engine  # noqa: E402
from bot.core.generation.generator import GenerationRequest, Generator, Sampling  # noqa: E402
from bot.core.ingest.pipeline import ingest_path  # noqa: E402
from bot.core.training.data import encode_tweets, split_tweets  # noqa: E402
from bot.core.training.loop import train  # noqa: E402
from bot.core.training.recipe import TrainConfig  # noqa: E402
from bot.runtime.logs import quiet_libraries  # noqa: E402
from tests.tiny_model import build_tiny_gpt2  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "tweets"
SHAPES = {
    "full": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, model_vocab_size=50257),
    "quick": dict(n_layer=4, n_embd=256, n_head=4, n_positions=256, model_vocab_size=8192),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- models --------------------------------------------------------------------------------------


def build_model(folder: Path, corpus_text: Path, shape: dict, *, peaked: bool = True) -> str:
    build_tiny_gpt2(folder, vocab_size=8192, corpus_files=[corpus_text], **shape)
    if peaked:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(folder)
        known = len(AutoTokenizer.from_pretrained(folder))
        with torch.no_grad():
            model.transformer.ln_f.weight.mul_(12.0)  # sharper logits, like a trained model's
            # The embedding is padded to GPT-2's 50,257 rows but the tokenizer knows fewer tokens:
            # zero rows keep the model from sampling ids that decode to nothing (a real GPT-2 has
            # none), which would make every path re-sample empty tweets.
            model.transformer.wte.weight[known:] = 0.0
        model.save_pretrained(folder)
    return str(folder)


def entropy_of(model_dir: str, tweets: list[str]) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok(tok.eos_token + tweets[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits[0].float(), -1)
    return float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())


# -- training ------------------------------------------------------------------------------------


def throughput(history: list[dict]) -> float:
    """Tokens per second from the second step on (the first pays one-off warm-up)."""
    steps = [h for h in history if "tokens" in h]
    first, last = steps[0], steps[-1]
    return (last["tokens"] - first["tokens"]) / max(1e-9, last["time"] - first["time"])


def bench_training(base: str, tweets: list[str], steps: int, work: Path) -> dict:
    variants = [
        ("baseline: full, fp32, padded", dict(method="full", precision="fp32", pack=False)),
        ("+ packing", dict(method="full", precision="fp32", pack=True)),
        ("+ bf16 autocast", dict(method="full", precision="auto", pack=True)),
        ("+ LoRA (ours)", dict(method="lora", precision="auto", pack=True)),
    ]
    rows = []
    for name, options in variants:
        config = TrainConfig(
            base_model=base, epochs=100, batch_size=8, block_size=128, max_steps=steps, **options
        )
        log(f"training: {name}")
        result = train(tweets, work / f"train-{len(rows)}", config)
        rows.append(
            {
                "name": name,
                "tokens_per_second": throughput(result.history),
                "precision": result.metrics["precision"],
            }
        )
    from transformers import AutoTokenizer

    train_part, _ = split_tweets(tweets, 0.1, 42)
    epoch_tokens = sum(len(seq) for seq in encode_tweets(AutoTokenizer.from_pretrained(base), train_part))
    return {"variants": rows, "epoch_tokens": epoch_tokens}


def bench_quality(
    corpus: list[str], pretrain: list[str], work: Path, corpus_text: Path, epochs: int, pretrain_steps: int
) -> dict:
    """Validation perplexity after the same training tokens, from the same pre-trained start."""
    start = build_model(
        work / "quality-start",
        corpus_text,
        dict(n_layer=4, n_embd=256, n_head=4, n_positions=256),
        peaked=False,
    )
    log("quality: pre-training the shared start on other people's tweets")
    pre = train(
        pretrain,
        work / "quality-pretrained",
        TrainConfig(
            base_model=start,
            method="full",
            epochs=5,
            learning_rate=1e-3,
            precision="auto",
            batch_size=16,
            max_steps=pretrain_steps,
        ),
    )
    base = str(pre.output_dir)
    out = {}
    # Packed blocks hold ~128 tokens where a padded row holds one tweet (~35 tokens): 2 blocks per
    # step keep the tokens per optimizer step, and so the number of steps, comparable.
    for name, options in [
        ("baseline", dict(method="full", precision="fp32", pack=False, learning_rate=5e-5, batch_size=8)),
        ("ours", dict(method="lora", precision="auto", pack=True, learning_rate=5e-4, batch_size=2)),
        (
            "ours, LoRA lr 2e-3",
            dict(method="lora", precision="auto", pack=True, learning_rate=2e-3, batch_size=2),
        ),
        (
            "ours, full fine-tune",
            dict(method="full", precision="auto", pack=True, learning_rate=5e-5, batch_size=2),
        ),
    ]:
        log(f"quality: fine-tuning, {name}")
        result = train(
            corpus, work / f"quality-{name}", TrainConfig(base_model=base, epochs=epochs, **options)
        )
        out[name] = {
            "val_perplexity": result.metrics["val_perplexity"],
            "train_tokens": result.metrics["train_tokens"],
            "initial_val_perplexity": math.exp(result.metrics["initial_val_loss"]),
        }
    return out


# -- generation ----------------------------------------------------------------------------------


def make_personas(base: str, tweets: list[str], count: int, work: Path) -> list[str]:
    """One LoRA persona trained for a few steps, copied to `count` folders (distinct adapters)."""
    first = train(tweets, work / "persona-0", TrainConfig(base_model=base, method="lora", max_steps=2))
    folders = [str(first.output_dir)]
    for i in range(1, count):
        target = work / f"persona-{i}"
        shutil.copytree(first.output_dir, target, dirs_exist_ok=True)
        folders.append(str(target))
    return folders


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_generation(base: str, personas: list[str], runs: int, new_tokens: int, concurrent: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    full = AutoModelForCausalLM.from_pretrained(base).eval()
    sampling = Sampling(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    ours = Generator(sampling, cache_size=len(personas) + 1)

    def timed_side_by_side(first, second) -> tuple[list[float], list[float]]:
        """Alternate the two, so that drift in the machine's speed affects both alike."""
        first(), second()  # warm-up
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(runs):
            for fn, out in ((first, times[0]), (second, times[1])):
                started = time.perf_counter()
                fn()
                out.append(time.perf_counter() - started)
        return times

    log("generation: latency of one /impersonate of 5")
    base_times, our_times = timed_side_by_side(
        lambda: baseline_generate(full, tokenizer, 5, new_tokens), lambda: ours.generate(personas[0], "", 5)
    )

    log(f"generation: {concurrent} concurrent requests for different personas")
    started = time.perf_counter()
    for _ in range(concurrent):  # the baseline answers one request after another
        baseline_generate(full, tokenizer, 5, new_tokens)
    base_rate = concurrent * 5 / (time.perf_counter() - started)
    requests = [GenerationRequest(p, "", 5) for p in personas[:concurrent]]
    ours.generate_batch(requests[:2])  # load the adapters outside the timing
    for p in personas[:concurrent]:
        ours.generate(p, "", 1)
    started = time.perf_counter()
    ours.generate_batch(requests)  # requests that arrive together share one forward pass per token
    our_rate = concurrent * 5 / (time.perf_counter() - started)
    return {
        "baseline": {
            "p50": statistics.median(base_times),
            "p95": percentile(base_times, 0.95),
            "rate": base_rate,
        },
        "ours": {"p50": statistics.median(our_times), "p95": percentile(our_times, 0.95), "rate": our_rate},
    }


# -- decoding engines, step by step ---------------------------------------------------------------
# bench/decoding.py runs each engine in a process of its own, interleaved run by run.


def int8_quality(work: Path, corpus_text: Path, pretrain: list[str], held_out: list[str], steps: int) -> dict:
    """Perplexity on held-out tweets of the int8 path against bf16 and fp32, on a pre-trained proxy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.core.generation.fastdecode import Int8GPT2

    shape = dict(n_layer=4, n_embd=256, n_head=4, n_positions=256)
    start = build_model(work / "int8-start", corpus_text, shape, peaked=False)
    pre = train(
        pretrain,
        work / "int8-pretrained",
        TrainConfig(
            base_model=start, method="full", epochs=5, learning_rate=1e-3, batch_size=16, max_steps=steps
        ),
    )
    tokenizer = AutoTokenizer.from_pretrained(pre.output_dir)
    fp32 = AutoModelForCausalLM.from_pretrained(pre.output_dir).eval()
    bf16 = AutoModelForCausalLM.from_pretrained(pre.output_dir, dtype=torch.bfloat16).eval()
    int8 = Int8GPT2(fp32)
    totals = {"fp32": 0.0, "bf16": 0.0, "int8": 0.0}
    count = 0
    with torch.inference_mode():
        for ids in encode_tweets(tokenizer, held_out):
            ids = torch.tensor([ids[:256]])
            targets = ids[0, 1:]
            for name, logits in (
                ("fp32", fp32(ids).logits[0]),
                ("bf16", bf16(ids).logits[0]),
                ("int8", int8.logits_of(ids)[0]),
            ):
                loss = torch.nn.functional.cross_entropy(logits[:-1].float(), targets, reduction="sum")
                totals[name] += float(loss)
            count += len(targets)
    return {name: math.exp(total / count) for name, total in totals.items()} | {"tokens": count}


def decoding_report(results: dict, q: dict | None, concurrent: int) -> str:
    d = decoding.engines(results)
    base = d[decoding.BASELINE]
    ct2 = decoding.peer(d)
    floor = results.get("floor")
    lines = [
        "| engine (5 rows x 40 tokens, top_p 0.95) | ms per decoding step | vs baseline "
        f"| vs CTranslate2 int8 | x the floor | {concurrent} concurrent personas, tweets/s | vs baseline |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in d.items():
        vs_ct2 = ratio(row["ms_per_step"], ct2["ms_per_step"], True) if ct2 else "n/a"
        vs_base = ratio(row["ms_per_step"], base["ms_per_step"], True)
        vs_floor = f"{row['ms_per_step'] / floor['ms']:.2f}x" if floor else "n/a"
        rate = f"{row['rate']:.1f} | {ratio(row['rate'], base['rate'])}" if row["rate"] else "n/a | n/a"
        lines.append(f"| {name} | {row['ms_per_step']:.1f} | {vs_base} | {vs_ct2} | {vs_floor} | {rate} |")
    if floor:
        lines.append(
            f"| the floor: reading {floor['weights'] / 1e6:.0f} M int8 weights once per step at the "
            f"measured {floor['gb_per_s']:.1f} GB/s | {floor['ms']:.1f} | | | 1.00x | | |"
        )
        ours = d[decoding.INT8]["ms_per_step"]
        lines += ["", f"Ours (int8) is {ours / floor['ms']:.2f}x the floor. Where one of its steps goes:", ""]
        lines += ["| part of a step | ms |", "| --- | --- |"]
        parts = decoding.step_breakdown(results).items()
        lines += [f"| {part} | {ms:.2f} |" for part, ms in parts if ms > 0]
    if q:
        change = 100 * (q["int8"] / q["bf16"] - 1)
        lines += [
            "",
            f"Held-out perplexity ({q['tokens']} tokens, pre-trained proxy): fp32 {q['fp32']:.2f}, "
            f"bf16 {q['bf16']:.2f}, int8 {q['int8']:.2f} ({change:+.2f}% vs bf16)",
        ]
    return "\n".join(lines)


# -- memory and disk -----------------------------------------------------------------------------

RSS_SCRIPT = """
import os, sys, json
sys.path.insert(0, {root!r})
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
from bot.core.generation.generator import Generator, Sampling
import torch
mode, paths = sys.argv[1], sys.argv[2:]
if mode == "baseline":
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(paths[0]).eval()
    with torch.inference_mode():
        model.generate(torch.zeros((1, 1), dtype=torch.long), max_new_tokens=8, do_sample=True, pad_token_id=0)
else:
    gen = Generator(Sampling(max_new_tokens=8, min_new_tokens=8), cache_size=len(paths) + 1)
    for p in paths:
        gen.generate(p, "", 1)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the (big) parent process.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps(hwm * 1024))
"""


def peak_rss(mode: str, paths: list[str]) -> int:
    script = RSS_SCRIPT.format(root=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", script, mode, *paths], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def folder_bytes(folder: str, *, weights_only: bool = False) -> int:
    total = 0
    for path in Path(folder).rglob("*"):
        if path.is_file() and (not weights_only or path.suffix in {".safetensors", ".bin"}):
            total += path.stat().st_size
    return total


# -- event loop lag ------------------------------------------------------------------------------


async def loop_lag(
    base: str, personas: list[str], tweets: list[str], work: Path, concurrent: int, seconds: float
) -> dict:
    """p99 of how late a 10 ms timer fires while one training and `concurrent` generations run."""
    from bot.config import load_settings
    from bot.core.service import PersonaService
    from bot.core.storage import ModelRecord

    settings = load_settings(
        {
            "DATABASE_PATH": str(work / "lag.db"),
            "MODELS_DIR": str(work / "lag-models"),
            "BASE_MODEL": base,
            "TRAIN_EPOCHS": "20",
            "GENERATION_MAX_NEW_TOKENS": "20",
            "GENERATION_MIN_NEW_TOKENS": "5",
            "MODEL_CACHE_SIZE": str(concurrent + 2),
        },
        dotenv=False,
    )
    core = PersonaService(settings)
    await core.start()
    for i, folder in enumerate(personas[:concurrent]):
        target = core.store.model_dir(1, f"p{i}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, target, dirs_exist_ok=True)
        await core.storage.models.save(
            ModelRecord(
                guild_id=1,
                handle=f"p{i}",
                display_name=f"P{i}",
                base_model=base,
                method="lora",
                path=core.store.relative(target),
            )
        )
    stats = {"downloaded": len(tweets), "retweets": 0, "short": 0, "duplicates": 0, "kept": len(tweets)}
    await core.trainings.submit(guild_id=1, handle="trainee", tweets=tweets, stats=stats)
    lags: list[float] = []
    stop = time.monotonic() + seconds

    async def probe() -> None:
        while time.monotonic() < stop:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    async def users() -> None:
        while time.monotonic() < stop:
            await asyncio.gather(*(core.generate(1, f"p{i}", "", 5) for i in range(concurrent)))

    await asyncio.sleep(1.0)  # let the training start
    await asyncio.gather(probe(), users())
    await core.close()
    return {
        "p50_ms": 1000 * statistics.median(lags),
        "p99_ms": 1000 * percentile(lags, 0.99),
        "samples": len(lags),
    }


# -- report --------------------------------------------------------------------------------------


def ratio(ours: float, baseline: float, lower_is_better: bool = False) -> str:
    if not baseline or not ours:
        return "n/a"
    value = baseline / ours if lower_is_better else ours / baseline
    return f"{value:.2f}x"


def report(r: dict) -> str:
    t = r["training"]["variants"]
    base_tps, our_tps = t[0]["tokens_per_second"], t[-1]["tokens_per_second"]
    epoch = r["training"]["epoch_tokens"]
    g = r["generation"]
    q = r["quality"]
    m = r["memory"]
    lines = [
        f"machine: {r['machine']}",
        f"model: {r['shape']}; corpus: {r['corpus']} ({r['tweets']} tweets kept)",
        "",
        "| figure | baseline | ours | ours vs baseline |",
        "| --- | --- | --- | --- |",
        f"| training tokens/s | {base_tps:.0f} | {our_tps:.0f} | {ratio(our_tps, base_tps)} |",
        f"| time per epoch of the corpus | {epoch / base_tps:.0f} s | {epoch / our_tps:.0f} s | {ratio(epoch / our_tps, epoch / base_tps, True)} |",
        f"| /impersonate of 5 tweets, p50 | {g['baseline']['p50']:.2f} s | {g['ours']['p50']:.2f} s | {ratio(g['ours']['p50'], g['baseline']['p50'], True)} |",
        f"| /impersonate of 5 tweets, p95 | {g['baseline']['p95']:.2f} s | {g['ours']['p95']:.2f} s | {ratio(g['ours']['p95'], g['baseline']['p95'], True)} |",
        f"| {r['concurrent']} concurrent requests, tweets/s | {g['baseline']['rate']:.1f} | {g['ours']['rate']:.1f} | {ratio(g['ours']['rate'], g['baseline']['rate'])} |",
        f"| peak RSS, one persona | {m['baseline_one'] / 2**20:.0f} MiB | {m['ours_one'] / 2**20:.0f} MiB | {ratio(m['ours_one'], m['baseline_one'], True)} |",
        f"| peak RSS, {m['many']} personas | | {m['ours_many'] / 2**20:.0f} MiB | {m['ours_many'] / m['ours_one']:.2f}x one persona |",
        f"| bytes on disk per persona | {m['disk_full'] / 2**20:.1f} MiB | {m['disk_lora'] / 2**20:.2f} MiB | {ratio(m['disk_lora'], m['disk_full'], True)} |",
        f"| validation perplexity, same training tokens (ours: LoRA, lr 5e-4) | {q['baseline']['val_perplexity']:.2f} | {q['ours']['val_perplexity']:.2f} | {100 * (q['ours']['val_perplexity'] / q['baseline']['val_perplexity'] - 1):+.1f}% |",
        *[
            f"| validation perplexity, {name} | | {v['val_perplexity']:.2f} | {100 * (v['val_perplexity'] / q['baseline']['val_perplexity'] - 1):+.1f}% |"
            for name, v in q.items()
            if name not in ("baseline", "ours")
        ],
        f"| event loop lag p99 (training + {r['concurrent']} generations) | | {r['lag']['p99_ms']:.1f} ms | target < 100 ms |",
        "",
        "Training, one change at a time (tokens/s, gain over the previous line):",
        "",
        "| variant | tokens/s | gain |",
        "| --- | --- | --- |",
    ]
    previous = None
    for v in t:
        gain = f"{v['tokens_per_second'] / previous:.2f}x" if previous else ""
        lines.append(f"| {v['name']} ({v['precision']}) | {v['tokens_per_second']:.0f} | {gain} |")
        previous = v["tokens_per_second"]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {device}, torch {torch.__version__}, Python {platform.python_version()}"


def decoding_only(
    args, base: str, tweets: list[str], pretrain: list[str], work: Path, corpus_text: Path, concurrent: int
) -> None:
    log(f"{machine()}; int8 engine: {int8_engine()}")
    personas = make_personas(base, tweets, concurrent, work)
    log("decoding: engines interleaved run by run")
    results = decoding.bench_decoding(base, personas, work, runs=3 if args.quick else 7)
    log("decoding: int8 perplexity on held-out tweets")
    _, held_out = split_tweets(tweets, 0.1, 42)
    quality = int8_quality(work, corpus_text, pretrain or tweets, held_out, 40 if args.quick else 150)
    print(f"machine: {machine()}; int8 engine: {int8_engine()}")
    print(decoding_report(results, quality, concurrent))
    if args.json:
        args.json.write_text(json.dumps({"decoding": results, "int8_quality": quality}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small shapes and few repetitions (CI-sized)")
    parser.add_argument("--corpus", type=Path, default=SHARED / "barackobama_fivethirtyeight.csv")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--decoding", action="store_true", help="only the decoding engines, step by step")
    args = parser.parse_args()
    quiet_libraries()
    if not args.corpus.is_file():
        sys.exit(f"corpus {args.corpus} not found (it lives in ../shared/data/tweets/)")
    mode = "quick" if args.quick else "full"
    shape = SHAPES[mode]
    tweets = ingest_path(args.corpus).tweets
    pretrain = [
        t
        for name in ("katyperry_topic_labelling.csv", "elonmusk_bytes_literal.csv")
        if (SHARED / name).is_file()
        for t in ingest_path(SHARED / name).tweets
    ]
    with tempfile.TemporaryDirectory(prefix="tweetalike-bench-") as tmp:
        work = Path(tmp)
        corpus_text = work / "corpus.txt"
        corpus_text.write_text("\n".join(tweets + pretrain), encoding="utf-8")
        base = build_model(work / "base", corpus_text, shape)
        concurrent = 16
        if args.decoding:
            decoding_only(args, base, tweets, pretrain, work, corpus_text, concurrent)
            return
        results: dict = {
            "machine": machine(),
            "mode": mode,
            "corpus": args.corpus.name,
            "tweets": len(tweets),
            "shape": f"GPT-2 {shape['n_layer']} layers, {shape['n_embd']} wide, vocab {shape['model_vocab_size']}, random weights",
            "concurrent": concurrent,
            "entropy_nats": entropy_of(base, tweets),
        }
        results["training"] = bench_training(base, tweets, 6 if args.quick else 10, work)
        personas = make_personas(base, tweets, 50, work)
        results["generation"] = bench_generation(base, personas, 3 if args.quick else 10, 40, concurrent)
        log("memory: peak RSS in fresh processes")
        full_folder = str(work / "train-0")
        results["memory"] = {
            "baseline_one": peak_rss("baseline", [base]),
            "ours_one": peak_rss("ours", personas[:1]),
            "ours_many": peak_rss("ours", personas),
            "many": len(personas),
            "disk_lora": folder_bytes(personas[0]),
            "disk_full": folder_bytes(full_folder),
        }
        quality_corpus = tweets[:800] if args.quick else tweets
        results["quality"] = bench_quality(
            quality_corpus,
            pretrain or tweets,
            work,
            corpus_text,
            1 if args.quick else 2,
            60 if args.quick else 300,
        )
        log("event loop lag under load")
        results["lag"] = asyncio.run(
            loop_lag(base, personas, tweets, work, concurrent, 10 if args.quick else 30)
        )
    table = report(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
