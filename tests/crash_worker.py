"""A core process to SIGKILL from tests: `python -m tests.crash_worker <env-json> <mode>`.

mode `train`: queue a training job (unless one is queued already) and run the queue until killed.
mode `resume`: just run the queue (what a restarted bot does).
It prints one line per event so the test knows when to kill it.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import sys

from bot.config import load_settings
from bot.core.service import PersonaService
from tests.conftest import tiny_tweets


async def main(env: dict, mode: str) -> None:
    core = PersonaService(load_settings(env, dotenv=False))
    await core.start()

    def on_event(event: str, *args) -> None:
        if event == "training_progress":
            job, p = args
            print(f"progress {job.id} {p.phase} {p.step}", flush=True)
        else:
            ended = args[0]
            print(f"finished {ended.job.id} {ended.state}", flush=True)
            if ended.error:  # the test reports it when the job did not end as it expected
                print(f"error {ended.error}", flush=True)

    core.set_event_sink(on_event)
    print("recovered " + " ".join(str(j.id) for j in core.trainings.recovered()), flush=True)
    if mode == "train":
        stats = {"downloaded": 400, "retweets": 0, "short": 0, "duplicates": 0, "kept": 400}
        job = await core.trainings.submit(
            guild_id=1, handle="alice", tweets=tiny_tweets() * 3, stats=stats, requested_by=5
        )
        print(f"queued {job.id}", flush=True)
    await core.trainings.wait_idle()
    print("idle", flush=True)
    await core.close()


if __name__ == "__main__":
    faulthandler.enable()  # a crash in native code shows its stack in the test's output
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2]))
