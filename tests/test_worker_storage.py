"""The storage behind trainings on workers, on both dialects: job ownership, announcements
claimed once, blobs; and the embedded default never loads the queue library."""

import subprocess
import sys

import pytest

from bot.core.errors import UserError
from bot.core.personas.modelstore import ModelStore, pack, unpack_into
from bot.core.service import trainings_on_workers
from bot.core.storage import Storage, checkpoint_key, persona_key
from tests.test_storage import new_job


@pytest.fixture
async def storage(db_url):
    opened = await Storage.open(db_url)
    yield opened
    await opened.close()


async def test_a_worker_owns_its_job_until_another_takes_it_over(storage):
    job = await new_job(storage)
    first = await storage.jobs.take(job.id, "w1/a", None)
    assert first.state == "running" and first.worker == "w1/a" and first.interrupted == 0
    assert await storage.jobs.report_progress(job.id, "w1/a", {"phase": "training", "step": 3}) == "ok"
    # w1 is presumed dead: w2 takes the running job over, from the checkpoint at step 3.
    second = await storage.jobs.take(job.id, "w2/b", 3)
    assert second.interrupted == 1 and second.resume_step == 3 and second.progress["step"] == 3
    assert await storage.jobs.report_progress(job.id, "w1/a", {"step": 4}) == "lost"
    assert not await storage.jobs.finish_as(job.id, "w1/a", "done")
    assert await storage.jobs.request_cancel(job.id)
    assert await storage.jobs.report_progress(job.id, "w2/b", {"step": 5}) == "cancel"
    assert await storage.jobs.finish_as(job.id, "w2/b", "cancelled")
    assert await storage.jobs.take(job.id, "w3/c", None) is None  # an ended job is never taken again
    assert await storage.jobs.corpus(job.id) == []


async def test_results_and_take_overs_are_announced_once(storage):
    job = await new_job(storage)
    await storage.jobs.take(job.id, "w1/a", None)
    assert await storage.jobs.hand_back(job.id, "w1/a")  # a worker stopping: back in the queue
    assert [j.id for j in await storage.jobs.list_queued()] == [job.id]
    taken = await storage.jobs.take(job.id, "w2/b", 7)
    assert taken.interrupted == 1 and taken.resume_step == 7
    assert await storage.jobs.claim_resume_notice(job.id, taken.interrupted)
    assert not await storage.jobs.claim_resume_notice(job.id, taken.interrupted)  # a second bot process
    assert await storage.jobs.finish_as(job.id, "w2/b", "done")
    assert [j.id for j in await storage.jobs.ended_unannounced()] == [job.id]
    assert await storage.jobs.claim_announcement(job.id)
    assert not await storage.jobs.claim_announcement(job.id)
    assert await storage.jobs.ended_unannounced() == []
    local = await new_job(storage, handle="bob")  # the in-process queue announces its own jobs
    await storage.jobs.finish(local.id, "done")
    assert await storage.jobs.ended_unannounced() == []


async def test_blobs_round_trip_a_persona_folder(storage, tmp_path):
    folder = tmp_path / "persona"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 100)
    digest = await storage.blobs.put(persona_key(7, "alice"), pack(folder), 7)
    assert await storage.blobs.digest(persona_key(7, "alice")) == digest
    got_digest, data = await storage.blobs.get(persona_key(7, "alice"))
    store = ModelStore(tmp_path / "bot-models")
    final = store.unpack(data, got_digest, 7, "alice")
    assert (final / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()
    assert store.bundle_digest(final) == digest
    assert await storage.blobs.put(persona_key(7, "alice"), b"x") != digest  # replaced in place
    await storage.blobs.delete(persona_key(7, "alice"))
    assert await storage.blobs.get(persona_key(7, "alice")) is None
    unpack_into(pack(folder), tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["adapter_config.json", "weights.bin"]
    assert checkpoint_key(3) != persona_key(3, "x")


def test_the_backend_is_chosen_by_the_database():
    assert not trainings_on_workers("auto", "sqlite+aiosqlite:///bot.db")
    assert trainings_on_workers("auto", "postgresql+psycopg://u@h/db")
    assert not trainings_on_workers("local", "postgresql+psycopg://u@h/db")
    with pytest.raises(UserError, match="TRAINING_BACKEND=queue needs DATABASE_URL"):
        trainings_on_workers("queue", "sqlite+aiosqlite:///bot.db")


def test_the_default_bot_never_loads_the_queue_library(tmp_path):
    code = (
        "import asyncio, sys\n"
        "from bot.config import load_settings\n"
        "from bot.discord.client import TweetalikeBot\n"
        f"env = {{'DATABASE_PATH': r'{tmp_path}/bot.db', 'MODELS_DIR': r'{tmp_path}/m'}}\n"
        "settings = load_settings(env)\n"
        "async def main():\n"
        "    bot = TweetalikeBot(settings)\n"
        "    await bot.core.start()\n"
        "    await bot.core.close()\n"
        "asyncio.run(main())\n"
        "assert 'procrastinate' not in sys.modules and 'psycopg' not in sys.modules, 'loaded'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
