"""Trainings per hour: in the bot process (the default) vs on one and on two training workers.

Starts a real PostgreSQL in a temporary directory (Debian's `postgresql` package), builds a
small GPT-2 (random weights, the tests' tokenizer), then, for each set-up, queues the same
trainings and times them from the first submit to the last result the bot has read:

  * local: the embedded default (SQLite, the bot's own thread pool, TRAINING_WORKERS=1);
  * 1 worker: `python -m bot.worker` with every core (TORCH_THREADS = cores);
  * 1 worker, 1 thread: the same with TORCH_THREADS=1 (tells the threads' effect from the processes');
  * 2 workers: two `python -m bot.worker` processes, the cores split between them.

Each set-up runs `--rounds` times, in alternating order, and the best run is shown, so that a
change of the machine's load during the run does not favour one set-up.

Workers are started (and have loaded torch) before the clock starts, as they would be in a
deployment. All set-ups run side by side in one run, so the ratios are comparable.

    python bench/workers.py [--jobs 6] [--steps 40] [--layers 4] [--embd 256] [--cores 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bot.config import load_settings  # noqa: E402
from bot.core.service import PersonaService  # noqa: E402
from tests.conftest import tiny_tweets  # noqa: E402
from tests.postgres import PostgresServer, find_bin_dir  # noqa: E402
from tests.tiny_model import build_tiny_gpt2  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def training_env(base: str, steps: int) -> dict[str, str]:
    return {
        "BASE_MODEL": base,
        "TRAIN_MAX_STEPS": str(steps),
        "TRAIN_EPOCHS": "20",
        "TRAIN_BATCH_SIZE": "8",
        "TRAIN_BLOCK_SIZE": "128",
        "TRAIN_CHECKPOINT_SECONDS": "30",
        "QUEUE_POLL_SECONDS": "0.2",
    }


def start_workers(count: int, threads: int, url: str, base: str, steps: int, work: Path) -> list:
    workers = []
    for i in range(count):
        folder = work / f"worker-{i}"
        folder.mkdir(parents=True)
        env = {
            **os.environ,
            **training_env(base, steps),
            "DATABASE_URL": url,
            "MODELS_DIR": str(folder / "models"),
            "TORCH_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": str(ROOT),
        }
        out = open(folder / "worker.log", "wb")
        workers.append(
            (
                subprocess.Popen(
                    [sys.executable, "-m", "bot.worker"],
                    cwd=folder,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                ),
                folder / "worker.log",
            )
        )
    for _, log_path in workers:  # ready: torch loaded, queue open
        while "is ready" not in log_path.read_text(errors="replace"):
            time.sleep(0.2)
    return workers


async def time_trainings(env: dict[str, str], jobs: int) -> float:
    service = PersonaService(load_settings(env))
    await service.start()
    tweets = tiny_tweets()
    started = time.monotonic()
    for i in range(jobs):
        await service.trainings.submit(guild_id=1 + i % 3, handle=f"persona{i}", tweets=tweets, stats={})
    await service.trainings.wait_idle(timeout=3600)
    elapsed = time.monotonic() - started
    states = [j.state for g in (1, 2, 3) for j in await service.trainings.list(g)]
    await service.close()
    assert states.count("done") == jobs, states
    return elapsed


def run_setup(label: str, name: str, args, base: str, server: PostgresServer | None, work: Path) -> dict:
    folder = work / "".join(c if c.isalnum() else "-" for c in label)
    env = {
        **training_env(base, args.steps),
        "MODELS_DIR": str(folder / "bot-models"),
        "DATABASE_PATH": str(folder / "bot.db"),
        "TORCH_THREADS": str(args.cores),
    }
    workers = []
    if server is not None:
        count = 2 if name.startswith("2") else 1
        env["DATABASE_URL"] = server.new_database()
        threads = 1 if "1 thread" in name else max(1, args.cores // count)
        workers = start_workers(count, threads, env["DATABASE_URL"], base, args.steps, folder)
    try:
        log(f"{label}: {args.jobs} trainings of {args.steps} steps...")
        elapsed = asyncio.run(time_trainings(env, args.jobs))
    finally:
        for process, _ in workers:
            process.terminate()
            process.wait()
    return {"setup": name, "seconds": elapsed, "per_hour": args.jobs * 3600 / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--embd", type=int, default=256)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each set-up; the best one is shown")
    args = parser.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    work = Path(tempfile.mkdtemp(prefix="tweetalike-workers-"))
    base = str(build_tiny_gpt2(work / "base", n_layer=args.layers, n_embd=args.embd, n_head=4))
    server = PostgresServer(bin_dir)
    server.start()
    names = ["local (in the bot)", "1 worker", "1 worker, 1 thread", "2 workers"]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    try:
        for round_ in range(args.rounds):  # alternate the order, so a change of load hits every set-up
            for name in names if round_ % 2 == 0 else names[::-1]:
                pg = None if name.startswith("local") else server
                runs[name].append(run_setup(f"{name} r{round_}", name, args, base, pg, work))
    finally:
        server.stop()
    rows = [min(runs[name], key=lambda r: r["seconds"]) | {"setup": name} for name in names]
    baseline = rows[0]["per_hour"]
    print(
        f"{args.jobs} LoRA trainings of {args.steps} steps (batch 8 x 128 tokens), "
        f"GPT-2 {args.layers} layers x {args.embd}, {args.cores} cores, {os.cpu_count()} CPUs seen\n"
    )
    print(f"best of {args.rounds} runs per set-up, set-ups alternated\n")
    print("| set-up | wall time (s) | trainings per hour | vs local |\n| --- | --- | --- | --- |")
    for row in rows:
        ratio = row["per_hour"] / baseline
        print(f"| {row['setup']} | {row['seconds']:.1f} | {row['per_hour']:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
