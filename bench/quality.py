"""Quality bench: how well each training method fits a person, on a proxy base that was pre-trained.

A random base cannot tell a good default from a bad one (everything starts at perplexity ~vocab
size), and GPT-2 itself cannot be downloaded here. So this bench builds a GPT-2-shaped proxy:

1. a byte-level BPE tokenizer and a small GPT-2 (6 layers x 384 by default) pre-trained for a few
   minutes on English prose found offline (the Python standard library's docstrings and
   comments, text under /usr/share/doc); cached under bench/results/quality/;
2. for each shared person (../shared/data/tweets/), a short continued pre-training of that base on
   prose mixed with the *other* people's tweets (never the target's: leave-one-out), also cached;
3. fine-tunes of that person's base with the project's own `train()`, one per variant, each on the
   same tweets for the same epochs (equal training tokens), each in a fresh process (so the peak
   RAM is its own), and a table: held-out perplexity, tokens/s, wall time, peak RAM, and bytes on
   disk per persona, both for the proxy and computed for GPT-2-124M's shapes.

The base's own perplexity is reported (on held-out prose and on each person before fine-tuning)
so a reader can judge the proxy. Full run by hand (see docs/quality.md):

    .venv/bin/python -m bench.quality --pretrain-minutes 20 --adapt-minutes 3 --epochs 4
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED_TWEETS = ROOT.parent / "shared" / "data" / "tweets"
DEFAULT_CACHE = ROOT / "bench" / "results" / "quality"
GPT2_TOKENIZER = ROOT.parent / "shared" / "models" / "gpt2-tokenizer"
EOS = "<|endoftext|>"
GPT2_124M = {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}
# Proxy shapes (--shape). "small" is the 6 x 384 proxy of the first runs; "gpt2-depth" has GPT-2's
# 12 layers, narrowed so a CPU can pre-train it; "gpt2-124m" is GPT-2-124M itself (a GPU's job).
SHAPES = {
    "small": {"n_layer": 6, "n_embd": 384, "n_head": 6},
    "gpt2-depth": {"n_layer": 12, "n_embd": 192, "n_head": 6},
    "gpt2-124m": {"n_layer": 12, "n_embd": 768, "n_head": 12},
}


@dataclass
class Variant:
    """One training recipe: `TrainConfig` fields that differ from the project's defaults."""

    name: str
    settings: dict[str, Any]


def default_variants() -> list[Variant]:
    """The sweep behind today's defaults (docs/quality.md): full fine-tunes around the published 2e-4,
    the default LoRA recipe at a few adapter and token-row rates, and the previous default (rsLoRA
    and 1,000 token rows at 5e-3) without the divergence guard, as it ran."""
    rows = {"method": "lora"}  # the defaults: rsLoRA r16 a16 and 1,000 token rows at their own rate
    return [  # in the order a short budget should run them
        Variant("full lr 2e-4", {"method": "full", "learning_rate": 2e-4}),
        Variant(
            "rsLoRA lr 5e-4, rows 2e-4", rows | {"learning_rate": 5e-4, "token_rows_learning_rate": 2e-4}
        ),
        Variant(
            "previous default (rsLoRA + rows at 5e-3), no guard",
            rows | {"learning_rate": 5e-3, "token_rows_learning_rate": 5e-3, "max_rollbacks": 0},
        ),
        Variant("full lr 1e-3 (previous full default)", {"method": "full", "learning_rate": 1e-3}),
        Variant(
            "rsLoRA lr 2e-4, rows 2e-4", rows | {"learning_rate": 2e-4, "token_rows_learning_rate": 2e-4}
        ),
        Variant(
            "rsLoRA lr 1e-3, rows 2e-4", rows | {"learning_rate": 1e-3, "token_rows_learning_rate": 2e-4}
        ),
        Variant(
            "rsLoRA lr 5e-4, rows 1e-3", rows | {"learning_rate": 5e-4, "token_rows_learning_rate": 1e-3}
        ),
        Variant("rsLoRA lr 5e-4, no token rows", rows | {"learning_rate": 5e-4, "lora_token_rows": 0}),
        Variant("full lr 5e-4", {"method": "full", "learning_rate": 5e-4}),
        Variant("default", rows),
    ]


# --------------------------------------------------------------------------- corpora


def prose_corpus(max_bytes: int = 12_000_000) -> str:
    """English prose available offline: stdlib docstrings and comments, then /usr/share/doc text."""
    import sysconfig

    parts: list[str] = []
    size = 0
    for text in _stdlib_prose(Path(sysconfig.get_paths()["stdlib"])):
        parts.append(text)
        size += len(text)
        if size >= max_bytes * 0.7:
            break
    for text in _doc_prose(Path("/usr/share/doc")):
        parts.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    random.Random(0).shuffle(parts)
    return "\n\n".join(parts)


def _stdlib_prose(stdlib: Path):
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    yield doc
        comments = [line.strip()[1:].strip() for line in source.splitlines() if line.strip().startswith("# ")]
        if comments:
            yield " ".join(comments)


def _doc_prose(root: Path):
    for path in sorted(root.rglob("*")):
        if path.suffix in {".gz", ".html", ".png", ".svg", ".js", ".css"} or not path.is_file():
            continue
        if path.name == "copyright":  # licences: the same few texts hundreds of times
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if len(text) > 200:
            yield text


def people(folder: Path = SHARED_TWEETS) -> dict[str, list[str]]:
    """Each shared person's kept tweets, read by the project's own ingestion."""
    from bot.core.ingest.pipeline import ingest_path

    return {path.name.split("_")[0]: ingest_path(path).tweets for path in sorted(folder.glob("*.csv"))}


# --------------------------------------------------------------------------- proxy base


def build_tokenizer(text_file: Path, out_dir: Path, vocab_size: int, n_positions: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2TokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train([str(text_file)], trainer)
    fast = GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    fast.model_max_length = n_positions
    fast.save_pretrained(out_dir)
    return fast


def token_stream(tokenizer, documents: list[str]) -> list[int]:
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for encoded in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        ids += [eos, *encoded]
    return ids


def split_prose(text: str, held_out: float = 0.02) -> tuple[list[str], list[str]]:
    chunks = [c for c in text.split("\n\n") if c.strip()]
    n_val = max(1, int(len(chunks) * held_out))
    return chunks[n_val:], chunks[:n_val]


def lm_loss(model, ids: list[int], block: int, batch: int, device, max_blocks: int = 200) -> float:
    """Mean next-token loss over up to `max_blocks` consecutive blocks of `ids`."""
    import torch

    blocks = [ids[i : i + block] for i in range(0, len(ids) - block, block)][:max_blocks]
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(blocks), batch):
            x = torch.tensor(blocks[i : i + batch], device=device)
            total += float(model(input_ids=x, labels=x).loss) * len(x)
    model.train()
    return total / max(1, len(blocks))


def pretrain(
    model,
    ids: list[int],
    *,
    minutes: float,
    block: int,
    batch: int,
    lr: float,
    device,
    log_every: int = 50,
    max_tokens: int = 0,
    stop_file: Path | None = None,
) -> dict[str, Any]:
    """Next-token pre-training on random windows of `ids` for a wall-clock (and token) budget."""
    import torch

    from bot.core.devices import autocast, autocast_dtype

    amp = autocast_dtype("auto", device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    data = torch.tensor(ids, dtype=torch.long)
    rng = torch.Generator().manual_seed(0)
    started, step, tokens = time.monotonic(), 0, 0
    budget = minutes * 60
    model.train()
    while time.monotonic() - started < budget and not (max_tokens and tokens >= max_tokens):
        if stop_file is not None and stop_file.exists():  # stopped by hand: keep what was learnt
            print(f"  {stop_file} found: pre-training stops here", flush=True)
            break
        frac = (time.monotonic() - started) / budget  # cosine decay over the budget used up first
        if max_tokens:
            frac = max(frac, tokens / max_tokens)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        starts = torch.randint(0, len(data) - block - 1, (batch,), generator=rng)
        x = torch.stack([data[s : s + block] for s in starts.tolist()]).to(device)
        with autocast(device, amp):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step, tokens = step + 1, tokens + x.numel()
        if step % log_every == 0:
            seconds = time.monotonic() - started
            print(f"  pretrain step {step} loss {loss.item():.3f} ({seconds:.0f}s)", flush=True)
    return {"steps": step, "tokens": tokens, "seconds": round(time.monotonic() - started, 1)}


@dataclass
class ProxySpec:
    n_layer: int = 6
    n_embd: int = 384
    n_head: int = 6
    vocab_size: int = 8192
    n_positions: int = 256
    pretrain_minutes: float = 10.0
    adapt_minutes: float = 1.5  # continued pre-training with the other people's tweets
    prose_bytes: int = 12_000_000
    block: int = 128
    batch: int = 8  # small batches: more updates from the few tokens a CPU budget allows
    lr: float = 2e-3
    device: str = "auto"
    tokenizer: str = ""  # a tokenizer folder (GPT-2's own); empty: train a BPE of vocab_size on the prose
    pretrain_tokens: int = 0  # also stop pre-training after this many tokens (0: the time budget only)

    def key(self) -> str:
        vocab = "gpt2tok" if self.tokenizer else f"v{self.vocab_size}"
        tokens = f"-{self.pretrain_tokens // 1000}kt" if self.pretrain_tokens else ""
        return (
            f"gpt2-{self.n_layer}x{self.n_embd}-{vocab}-{self.prose_bytes // 1000}k-"
            f"{self.pretrain_minutes:g}m{tokens}"
        )


def prose_base(spec: ProxySpec, cache: Path) -> tuple[Path, dict[str, Any]]:
    """The prose-only proxy base (built once, then read from the cache)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from bot.core.devices import pick_device

    out = cache / spec.key()
    info_file = out / "proxy.json"
    if info_file.exists():
        return out, json.loads(info_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    train_docs, val_docs = split_prose(prose_corpus(spec.prose_bytes))
    corpus_file = out / "prose.txt"
    corpus_file.write_text("\n\n".join(train_docs))
    if spec.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer)
        tokenizer.model_max_length = spec.n_positions
        tokenizer.save_pretrained(out)
    else:
        tokenizer = build_tokenizer(corpus_file, out, spec.vocab_size, spec.n_positions)
    corpus_file.unlink()
    ids, val_ids = token_stream(tokenizer, train_docs), token_stream(tokenizer, val_docs)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    device = pick_device(spec.device)
    model = GPT2LMHeadModel(config).to(device)
    print(
        f"Pre-training {spec.key()} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{len(ids):,} prose tokens) for {spec.pretrain_minutes} min on {device}",
        flush=True,
    )
    run = pretrain(
        model,
        ids,
        minutes=spec.pretrain_minutes,
        block=spec.block,
        batch=spec.batch,
        lr=spec.lr,
        device=device,
        max_tokens=spec.pretrain_tokens,
        stop_file=out / "STOP",
    )
    info = {
        "spec": asdict(spec),
        "params": sum(p.numel() for p in model.parameters()),
        "prose_tokens": len(ids),
        "pretrain": run,
        "prose_val_ppl": math.exp(lm_loss(model, val_ids, spec.block, spec.batch, device)),
    }
    model.to("cpu").save_pretrained(out)
    (out / "val_prose.json").write_text(json.dumps(val_docs))
    info_file.write_text(json.dumps(info, indent=1))
    return out, info


def person_base(
    spec: ProxySpec, cache: Path, target: str, corpora: dict[str, list[str]]
) -> tuple[Path, dict]:
    """The prose base, further pre-trained on prose mixed with everyone's tweets but the target's."""
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from bot.core.devices import pick_device

    base, base_info = prose_base(spec, cache)
    out = cache / f"{spec.key()}-without-{target}-{spec.adapt_minutes:g}m"
    info_file = out / "proxy.json"
    if info_file.exists():
        return out, json.loads(info_file.read_text())
    others = [t for name, tweets in corpora.items() if name != target for t in tweets]
    if spec.adapt_minutes <= 0 or not others:
        return base, base_info
    tokenizer = AutoTokenizer.from_pretrained(base)
    prose_train, _ = split_prose(prose_corpus(spec.prose_bytes))
    rng = random.Random(0)
    docs = others + rng.sample(prose_train, min(len(prose_train), len(others) // 4))  # ~half the tokens each
    rng.shuffle(docs)
    device = pick_device(spec.device)
    model = GPT2LMHeadModel.from_pretrained(base).to(device)
    torch.manual_seed(0)
    print(
        f"Adapting the base to tweets without @{target} ({len(others):,} tweets) for "
        f"{spec.adapt_minutes} min",
        flush=True,
    )
    run = pretrain(
        model,
        token_stream(tokenizer, docs),
        minutes=spec.adapt_minutes,
        block=spec.block,
        batch=spec.batch,
        lr=spec.lr / 3,
        device=device,
    )
    val_ids = token_stream(tokenizer, json.loads((base / "val_prose.json").read_text()))
    info = dict(
        base_info,
        adapt=run,
        excluded=target,
        prose_val_ppl=math.exp(lm_loss(model, val_ids, spec.block, spec.batch, device)),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out)
    tokenizer.save_pretrained(out)
    info_file.write_text(json.dumps(info, indent=1))
    return out, info


# --------------------------------------------------------------------------- fine-tunes


def gpt2_124m_persona_bytes(settings: dict[str, Any]) -> int:
    """Bytes of weights a persona saves with GPT-2-124M's shapes (built on the meta device)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from bot.core.training.adapters import wrap_lora
    from bot.core.training.recipe import TrainConfig

    config = TrainConfig(**settings)
    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(**GPT2_124M))
    if config.method == "full":
        # save_pretrained keeps the model's fp32 weights; the tied output layer is stored once.
        return sum(p.numel() for p in model.parameters()) * 4
    model = wrap_lora(model, config)
    # As train() saves them: the LoRA matrices and token rows in bf16, layer norms and biases in fp32.
    # Token rows: a person's tweets rarely use all of them; this is the most it can be.
    token_rows = min(config.lora_token_rows, GPT2_124M["vocab_size"]) * GPT2_124M["n_embd"] * 2
    return token_rows + sum(
        p.numel() * (2 if "lora_" in n else 4) for n, p in model.named_parameters() if p.requires_grad
    )


def folder_bytes(folder: Path) -> int:
    return sum(
        f.stat().st_size for f in folder.iterdir() if f.is_file() and f.suffix in {".safetensors", ".bin"}
    )


class PeakRss:
    """Samples this process's resident memory while a run lasts: its peak, and the rise over the start."""

    def __init__(self, every: float = 0.05):
        import threading

        self.every, self.start = every, _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_variant(base: Path, tweets: list[str], settings: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Fine-tune with the project's own `train()` and measure it."""
    from bot.core.errors import NoImprovement
    from bot.core.training.loop import train
    from bot.core.training.recipe import TrainConfig

    config = TrainConfig(base_model=str(base), **settings)
    started = time.monotonic()
    with PeakRss() as rss:
        try:
            result = train(tweets, out_dir, config)
        except NoImprovement as failed:  # what a user gets: no persona (the base stays as it was)
            return {
                "no_improvement": True,
                "val_ppl": math.exp(failed.best_val_loss),
                "initial_val_ppl": math.exp(failed.initial_val_loss),
                "wall_seconds": round(time.monotonic() - started, 1),
            }
    m = result.metrics
    return {
        "learning_rate": m["learning_rate"],  # a quarter of the variant's when its first try failed
        "rollbacks": m["rollbacks"],
        "max_loss_climb": m["max_loss_climb"],
        "val_ppl": m["val_perplexity"],
        "initial_val_ppl": math.exp(m["initial_val_loss"]),
        "last_epoch_val_ppl": m.get("last_val_perplexity"),
        "best_epoch": m.get("best_epoch"),
        "train_tokens": m["train_tokens"],
        "tokens_per_second": m["tokens_per_second"],
        "wall_seconds": round(time.monotonic() - started, 1),
        "peak_rss_mb": round(rss.peak / 2**20),
        "rss_rise_mb": round((rss.peak - rss.start) / 2**20),  # what this training added
        "disk_bytes": folder_bytes(out_dir),
    }


def run_isolated(base: Path, tweets_file: Path, settings: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """`run_variant` in a fresh interpreter, so its peak RAM is its own (costs an import per run)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.quality",
        "--one",
        json.dumps(
            {"base": str(base), "tweets": str(tweets_file), "settings": settings, "out": str(out_dir)}
        ),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"variant failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class Bench:
    spec: ProxySpec = field(default_factory=ProxySpec)
    variants: list[Variant] = field(default_factory=default_variants)
    persons: list[str] | None = None  # None: every shared person
    max_tweets: int = 0  # 0: all of a person's tweets; else a fixed random subset (fewer tokens)
    epochs: int = 2
    common: dict[str, Any] = field(default_factory=dict)  # settings applied to every variant
    cache: Path = DEFAULT_CACHE
    isolate: bool = True  # each fine-tune in its own process (peak RAM per variant)
    corpora: dict[str, list[str]] | None = None  # None: read ../shared/data/tweets/


def run_bench(bench: Bench, results_file: Path | None = None) -> list[dict[str, Any]]:
    """Every variant on every person; one row per (person, variant)."""
    from bot.core.training.recipe import TrainConfig

    corpora = bench.corpora if bench.corpora is not None else people()
    rows: list[dict[str, Any]] = []
    for person in bench.persons or sorted(corpora):
        base, info = person_base(bench.spec, bench.cache, person, corpora)
        tweets = list(corpora[person])
        if bench.max_tweets and len(tweets) > bench.max_tweets:
            tweets = random.Random(0).sample(tweets, bench.max_tweets)
        tweets_file = bench.cache / "runs" / f"{person}-tweets.json"
        tweets_file.parent.mkdir(parents=True, exist_ok=True)
        tweets_file.write_text(json.dumps(tweets))
        for variant in bench.variants:
            settings = {"epochs": bench.epochs, "device": bench.spec.device} | bench.common | variant.settings
            out_dir = bench.cache / "runs" / person / variant.name.replace(" ", "_").replace("/", "-")
            measured = (
                run_isolated(base, tweets_file, settings, out_dir)
                if bench.isolate
                else run_variant(base, tweets, settings, out_dir)
            )
            row = {
                "person": person,
                "variant": variant.name,
                "tweets": len(tweets),
                "base_prose_ppl": info["prose_val_ppl"],
                **measured,
                "gpt2_124m_bytes": gpt2_124m_persona_bytes(settings),
            }
            asked = TrainConfig(**settings).lr
            row["retried"] = bool(row.get("learning_rate") and row["learning_rate"] < asked)
            rows.append(row)
            print(format_row(row), flush=True)
            if results_file:
                with results_file.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    return rows


# --------------------------------------------------------------------------- report


def format_row(r: dict[str, Any]) -> str:
    if r.get("no_improvement"):
        return (
            f"@{r['person']:<13} {r['variant']:<38} NO IMPROVEMENT: ppl {r['val_ppl']:8.1f} at best "
            f"(before {r['initial_val_ppl']:.0f}; also at a quarter of the rate) {r['wall_seconds']:6.1f}s"
        )
    retried = " (retried at lr/4)" if r.get("retried") else ""
    return (
        f"@{r['person']:<13} {r['variant']:<38} ppl {r['val_ppl']:8.1f} "
        f"(before {r['initial_val_ppl']:.0f}, epoch {r['best_epoch']}) "
        f"{r['tokens_per_second']:7.0f} tok/s {r['wall_seconds']:6.1f}s {r['peak_rss_mb']:5d} MB "
        f"{r['disk_bytes'] / 1e6:7.2f} MB (124M: {r['gpt2_124m_bytes'] / 1e6:.1f} MB) "
        f"rollbacks {r.get('rollbacks', 0)}, climb {r.get('max_loss_climb') or 0:.2f}{retried}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per variant, perplexity per person and vs the best full fine-tune."""
    persons = sorted({r["person"] for r in rows})
    best_full = {
        p: min(
            (
                r["val_ppl"]
                for r in rows
                if r["person"] == p and r["variant"].startswith("full") and not r.get("no_improvement")
            ),
            default=None,
        )
        for p in persons
    }
    head = [
        "variant",
        *(f"@{p} ppl (vs best full)" for p in persons),
        "kept epoch",
        "tokens/s",
        "wall s",
        "RAM rise MB",
        "disk MB (proxy)",
        "disk MB (GPT-2-124M)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    before = {p: next(r["initial_val_ppl"] for r in rows if r["person"] == p) for p in persons}
    lines.append(
        "| base, before fine-tuning | "
        + " | ".join(f"{before[p]:.1f}" for p in persons)
        + " |"
        + " |" * (len(head) - 1 - len(persons))
    )
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = {r["person"]: r for r in rows if r["variant"] == name}
        cells = [_cell(mine[p], best_full[p]) if p in mine else "" for p in persons]
        trained = [r for r in mine.values() if not r.get("no_improvement")] or [{}]
        epochs = "/".join(str(mine[p].get("best_epoch", "-")) for p in persons if p in mine)
        speed = sum(r.get("tokens_per_second", 0) for r in trained) / len(trained)
        wall = sum(r["wall_seconds"] for r in mine.values()) / len(mine)
        ram = max(r.get("rss_rise_mb", r.get("peak_rss_mb", 0)) for r in trained)
        disk = trained[0].get("disk_bytes", 0) / 1e6
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {epochs} | {speed:.0f} | {wall:.0f} | {ram} | "
            f"{disk:.2f} | {next(iter(mine.values()))['gpt2_124m_bytes'] / 1e6:.1f} |"
        )
    return "\n".join(lines)


def _cell(row: dict[str, Any], best_full: float | None) -> str:
    if row.get("no_improvement"):
        return f"no better than the base ({row['val_ppl']:.1f} at best): nothing saved"
    marks = "".join(
        [
            f", lr {row['learning_rate']:g} after the retry" if row.get("retried") else "",
            f", {row['rollbacks']} roll-back(s)" if row.get("rollbacks") else "",
        ]
    )
    return f"{row['val_ppl']:.1f} ({_vs(row['val_ppl'], best_full)}{marks})"


def _vs(value: float, best: float | None) -> str:
    if best is None:
        return "n/a"
    return "best" if abs(value - best) < 1e-9 else f"{(value / best - 1) * 100:+.1f}%"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-minutes", type=float, default=10.0, help="prose pre-training budget")
    p.add_argument(
        "--adapt-minutes",
        type=float,
        default=1.5,
        help="continued pre-training on the other people's tweets, per person (0: none)",
    )
    p.add_argument(
        "--shape", choices=sorted(SHAPES), help="a proxy shape (overrides --layers/--width/--heads)"
    )
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8192, help="with --own-tokenizer: its vocabulary size")
    p.add_argument(
        "--own-tokenizer",
        action="store_true",
        help="train a BPE on the prose instead of using GPT-2's tokenizer from ../shared/models/",
    )
    p.add_argument("--pretrain-tokens", type=int, default=0, help="stop pre-training at this many tokens")
    p.add_argument("--positions", type=int, default=256, help="the proxy's context length")
    p.add_argument("--pretrain-batch", type=int, default=8, help="pre-training rows per step (GPU: 64+)")
    p.add_argument("--pretrain-lr", type=float, default=2e-3, help="pre-training peak learning rate")
    p.add_argument("--tweets-dir", type=Path, default=SHARED_TWEETS, help="the shared tweet corpora")
    p.add_argument("--persons", nargs="*", help="handles to fine-tune (default: every shared person)")
    p.add_argument("--variants", nargs="*", help="substrings of variant names to run (default: all)")
    p.add_argument("--max-tweets", type=int, default=0, help="fine-tune on this many tweets (0: all)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--results", type=Path, help="append one JSON line per run here")
    p.add_argument("--table", type=Path, help="only print the table of a results file")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of each person's tweets")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the fine-tunes in this process (faster; RAM is then the rise during each run)",
    )
    p.add_argument("--quick", action="store_true", help="a tiny model and a few steps (seconds)")
    p.add_argument("--pretrain-only", action="store_true", help="build (or show) the cached proxy base only")
    p.add_argument("--one", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    import torch

    torch.set_num_threads(threads)
    if args.one:
        job = json.loads(args.one)
        tweets = json.loads(Path(job["tweets"]).read_text())
        print(json.dumps(run_variant(Path(job["base"]), tweets, job["settings"], Path(job["out"]))))
        return
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return
    bench = bench_from_args(args)
    if args.pretrain_only:
        print(json.dumps(prose_base(bench.spec, bench.cache)[1], indent=1))
        return
    rows = run_bench(bench, args.results)
    print()
    print(table(rows))


def bench_from_args(args: argparse.Namespace) -> Bench:
    shape = (
        SHAPES[args.shape]
        if args.shape
        else {"n_layer": args.layers, "n_embd": args.width, "n_head": args.heads}
    )
    tokenizer = ""
    if not args.own_tokenizer:
        if not (GPT2_TOKENIZER / "tokenizer.json").is_file():
            raise SystemExit(f"GPT-2's tokenizer is not in {GPT2_TOKENIZER}: pass --own-tokenizer")
        tokenizer = str(GPT2_TOKENIZER)
    spec = ProxySpec(
        **shape,
        vocab_size=GPT2_124M["vocab_size"] if tokenizer else args.vocab,
        n_positions=args.positions,
        pretrain_minutes=args.pretrain_minutes,
        adapt_minutes=args.adapt_minutes,
        device=args.device,
        tokenizer=tokenizer,
        pretrain_tokens=args.pretrain_tokens,
        batch=args.pretrain_batch,
        lr=args.pretrain_lr,
    )
    variants = default_variants()
    if args.variants:
        variants = [v for v in variants if any(s in v.name for s in args.variants)]
    if not any(args.tweets_dir.glob("*.csv")):
        raise SystemExit(f"No tweet corpora (*.csv) in {args.tweets_dir}")
    bench = Bench(
        spec=spec,
        variants=variants,
        persons=args.persons or None,
        max_tweets=args.max_tweets,
        epochs=args.epochs,
        cache=args.cache,
        corpora=people(args.tweets_dir),
        isolate=not args.in_process,
        common={"val_fraction": args.val_fraction},
    )
    if args.quick:
        bench = quick(bench)
    return bench


def quick(bench: Bench) -> Bench:
    """A tiny proxy and a few steps: checks the whole pipeline in seconds (the test suite runs it)."""
    bench.spec = ProxySpec(
        n_layer=1,
        n_embd=32,
        n_head=2,
        vocab_size=300,
        n_positions=64,
        pretrain_minutes=0.02,
        adapt_minutes=0.01,
        prose_bytes=60_000,
        block=32,
        batch=4,
        device="cpu",
    )
    bench.max_tweets = bench.max_tweets or 40
    bench.epochs = 2
    bench.common = bench.common | {"block_size": 32, "batch_size": 4, "device": "cpu"}
    bench.isolate = False
    return bench


if __name__ == "__main__":
    main()
