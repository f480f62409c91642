"""llama.cpp's decoding speed on the real base, for bench/decoding.py's table, where it builds here.

    .venv/bin/python -m bench.llamacpp                # build (once, cached), quantize, measure, print
    .venv/bin/python bench/decoding.py --real         # its row among the other engines

No wheel of llama.cpp's tools is on the package index, so this fetches the sdist of its Python
binding (`pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36`), builds the llama.cpp
it vendors with cmake (Release, `-DGGML_NATIVE=ON`, only `llama-batched-bench` and
`llama-quantize`, at the lowest priority on two jobs), converts the real base's Q4_1 GGUF file (the
wheel of bench/real_base.py) to Q8_0 with `llama-quantize --allow-requantize`, and times 5 parallel
sequences x 40 new tokens with `llama-batched-bench`: its T_TG (decoding only: no sampling, no
prompt) divided by the steps. Everything is cached under bench/results/llamacpp/ (git-ignored).

Its AMX/repacked CPU kernels have been seen to die with SIGILL in virtual machines: a run that
crashes is retried once with `--no-repack`. Where the build or the run fails, `prepare` says why and
the table goes without the row; nothing here makes the bench fail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / "results" / "llamacpp"
SDIST = "llama-cpp-python==0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
VENDORED = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
TARGETS = ("llama-batched-bench", "llama-quantize")
CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
]


class Unavailable(Exception):
    """llama.cpp cannot be built or run here; the message says why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def threads() -> int:
    return len(os.sched_getaffinity(0))


def _run(command: list[str], logfile: Path, what: str) -> None:
    """Run a build step, its output appended to `logfile`; Unavailable with its last lines if it fails."""
    with logfile.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = " | ".join(logfile.read_text(errors="replace").strip().splitlines()[-5:])
        raise Unavailable(f"{what} failed (exit {done.returncode}; {logfile}): {tail}")


def fetch_source(cache: Path) -> Path:
    """The llama.cpp source tree vendored in the pinned sdist (downloaded and unpacked once)."""
    source = cache / "llama.cpp"
    if (source / "CMakeLists.txt").is_file():
        return source
    sdist = cache / SDIST_FILE
    if not sdist.is_file():
        log(f"llama.cpp: downloading the sdist {SDIST}")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        _run([*command, "--quiet", SDIST, "-d", str(cache)], cache / "download.log", "pip download")
    partial = cache / "llama.cpp.part"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(VENDORED)]
        for member in members:
            member.name = member.name[len(VENDORED) :]
        archive.extractall(partial, members=[m for m in members if m.name], filter="data")
    partial.replace(source)
    return source


def build(cache: Path = DEFAULT_CACHE) -> Path:
    """The folder of the built tools (built once; Unavailable where cmake or the compiler fails)."""
    cache.mkdir(parents=True, exist_ok=True)
    binaries = cache / "build" / "bin"
    if all((binaries / name).is_file() for name in TARGETS):
        return binaries
    source = fetch_source(cache)
    logfile = cache / "build.log"
    log(f"llama.cpp: building {', '.join(TARGETS)} (several minutes on 2 cores; log {logfile})")
    _run(["cmake", "-S", str(source), "-B", str(cache / "build"), *CMAKE_OPTIONS], logfile, "cmake")
    command = ["nice", "-n", "19", "cmake", "--build", str(cache / "build"), "--config", "Release"]
    _run([*command, "-j2", "--target", *TARGETS], logfile, "the build")
    return binaries


def quantize_q8(binaries: Path, gguf: Path, cache: Path = DEFAULT_CACHE) -> Path:
    """The GGUF file converted to Q8_0 (from Q4_1 here: `--allow-requantize`), made once."""
    target = cache / (gguf.stem.rsplit(".", 1)[0] + ".Q8_0.gguf")
    if not target.is_file():
        partial = target.with_suffix(".part")
        command = [str(binaries / "llama-quantize"), "--allow-requantize", str(gguf), str(partial)]
        _run([*command, "Q8_0", str(threads())], cache / "quantize.log", "llama-quantize")
        partial.replace(target)
    return target


def batched_bench(binaries: Path, model: Path, rows: int, new_tokens: int, extra: list[str]) -> float:
    """Seconds llama-batched-bench takes to decode `new_tokens` steps of `rows` sequences (T_TG)."""
    command = [str(binaries / "llama-batched-bench"), "-m", str(model), "-c", "2048", "-b", "512"]
    command += ["-ub", "512", "-npp", "1", "-ntg", str(new_tokens), "-npl", str(rows)]
    command += ["-t", str(threads()), "--output-format", "jsonl", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    rows_out = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not rows_out:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise Unavailable(f"llama-batched-bench {' '.join(extra)} exited {done.returncode}: {tail}")
    return float(rows_out[-1]["t_tg"])


def prepare(
    gguf: Path, rows: int = 5, new_tokens: int = 40, cache: Path = DEFAULT_CACHE
) -> tuple[Callable[[], float] | None, str]:
    """(one run's decoding seconds, as a callable; None where llama.cpp is unavailable, the reason)."""
    try:
        binaries = build(cache)
        model = quantize_q8(binaries, gguf, cache)
    except (Unavailable, OSError, tarfile.TarError) as exc:
        return None, str(exc)
    reasons = []
    for extra in ([], ["--no-repack"]):  # the repacked (AMX) kernels may die with SIGILL
        try:
            batched_bench(binaries, model, rows, new_tokens, extra)  # also the warm-up
        except (Unavailable, subprocess.TimeoutExpired) as exc:
            reasons.append(str(exc))
            continue
        note = f" (with --no-repack: {reasons[0]})" if reasons else ""
        return partial(batched_bench, binaries, model, rows, new_tokens, extra), f"llama.cpp runs{note}"
    return None, "; ".join(reasons)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", type=Path, help="the GGUF file (default: the real base's, from its wheel)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.gguf is None:
        from bench.decoding import real_cache
        from bench.real_base import fetch_gguf

        args.gguf = fetch_gguf(real_cache())
    measure, reason = prepare(args.gguf, 5, args.new_tokens, args.cache)
    log(reason)
    if measure is None:
        sys.exit(1)
    runs = [1000 * measure() / args.new_tokens for _ in range(args.runs)]
    print(
        f"llama.cpp Q8_0, 5 rows x {args.new_tokens} tokens: {statistics.median(runs):.2f} ms per step {runs}"
    )


if __name__ == "__main__":
    main()
