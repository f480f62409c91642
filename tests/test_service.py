"""The core service as the bot and CLI use it: queue, persistence, registry and store together."""

import asyncio

import pytest

from bot.core.errors import UserError
from bot.core.service import PersonaService
from bot.core.storage import ModelRecord
from tests.conftest import listen, on_finished, tiny_tweets
from tests.hub_cards import HUGGINGTWEETS_CARD

STATS = {"downloaded": 400, "retweets": 0, "short": 0, "duplicates": 0, "kept": 400}


async def started(settings, run_queue=True) -> PersonaService:
    core = PersonaService(settings)
    await core.start(run_queue=run_queue)
    return core


async def finished(core: PersonaService, job_id: int, timeout: float = 120):
    done = asyncio.get_running_loop().create_future()

    def on_finish(outcome):
        if outcome.job.id == job_id and not done.done():
            done.set_result(outcome)

    on_finished(core, on_finish)
    return await asyncio.wait_for(done, timeout)


async def test_train_generate_delete_round_trip(settings):
    core = await started(settings)
    try:
        progress = []
        listen(core, lambda event, *args: progress.append(args[1]) if event == "training_progress" else None)
        job = await core.trainings.submit(
            guild_id=1,
            handle="@Alice",
            tweets=tiny_tweets(),
            stats=STATS,
            display_name="Alice A.",
            requested_by=7,
        )
        with pytest.raises(UserError, match="still training"):
            await core.generate(1, "alice")
        with pytest.raises(UserError, match="already queued or training"):
            await core.trainings.submit(guild_id=1, handle="alice", tweets=tiny_tweets(), stats=STATS)
        outcome = await finished(core, job.id)
        assert outcome.state == "done", outcome.error
        assert any(p.phase == "training" for p in progress)
        model = await core.storage.models.get(1, "alice")
        assert model.display_name == "Alice A." and model.created_by == 7 and model.stats == STATS
        folder = core.store.resolve(model.path)
        card = (folder / "README.md").read_text()
        assert "huggingtweets" in card and "| Tweets kept | 400 |" in card and "Alice A." in card
        _, tweets = await core.generate(1, "alice", "We", 3)
        assert len(tweets) == 3 and all(t.startswith("We") for t in tweets)
        # Another guild can neither see nor use nor delete it.
        with pytest.raises(UserError, match="no model called"):
            await core.generate(2, "alice")
        with pytest.raises(UserError):
            await core.delete_model(2, "alice")
        assert await core.list_models(2) == []
        await core.delete_model(1, "alice")
        assert not folder.exists() and await core.list_models(1) == []
        assert (await core.storage.jobs.get(1, job.id)).state == "done"
    finally:
        await core.close()


async def test_queued_job_survives_restart_and_interrupted_job_is_requeued(settings):
    core = await started(settings, run_queue=False)
    first = await core.trainings.submit(guild_id=1, handle="alice", tweets=tiny_tweets(), stats=STATS)
    second = await core.trainings.submit(guild_id=1, handle="bob", tweets=tiny_tweets(), stats=STATS)
    await core.storage.jobs.claim_next()  # as if a process died while training `alice`
    await core.close()

    core = await started(settings)
    try:
        assert [j.id for j in core.trainings.recovered()] == [first.id]
        await core.trainings.wait_idle(timeout=180)
        assert {m.handle for m in await core.list_models(1)} == {"alice", "bob"}
        assert (await core.storage.jobs.get(1, second.id)).state == "done"
        assert (await core.storage.jobs.get(1, first.id)).interrupted == 1
    finally:
        await core.close()


async def test_cancel_running_and_queued_jobs(settings):
    core = await started(settings.replace(train_max_steps=0, train_epochs=20))
    try:
        job = await core.trainings.submit(guild_id=1, handle="alice", tweets=tiny_tweets() * 5, stats=STATS)
        queued = await core.trainings.submit(guild_id=1, handle="bob", tweets=tiny_tweets(), stats=STATS)
        while core.trainings.progress(job.id) is None or core.trainings.progress(job.id).step < 1:
            await asyncio.sleep(0.05)
        assert await core.trainings.cancel(1, queued.id) == "cancelled"
        with pytest.raises(UserError):
            await core.trainings.cancel(2, job.id)  # another guild's job
        assert await core.trainings.cancel(1, job.id) == "cancelling"
        outcome = await finished(core, job.id)
        assert outcome.state == "cancelled"
        assert await core.list_models(1) == []
        assert list((core.store.root / ".staging").iterdir()) == []
    finally:
        await core.close()


async def test_save_failure_fails_the_job_and_keeps_the_previous_version(settings):
    core = await started(settings)
    try:
        job = await core.trainings.submit(guild_id=1, handle="alice", tweets=tiny_tweets(), stats=STATS)
        assert (await finished(core, job.id)).state == "done"
        _, before = await core.generate(1, "alice", "", 1)
        # Make the next save impossible: the staging area cannot be created.
        import shutil

        shutil.rmtree(core.store.root / ".staging")
        (core.store.root / ".staging").write_text("in the way")
        job = await core.trainings.submit(guild_id=1, handle="alice", tweets=tiny_tweets(), stats=STATS)
        outcome = await finished(core, job.id)
        assert outcome.state == "failed" and "Cannot create a folder" in outcome.error
        assert (await core.storage.jobs.get(1, job.id)).error == outcome.error
        _, after = await core.generate(1, "alice", "", 1)
        assert len(after) == 1
    finally:
        await core.close()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(handle="has space"), "letters, digits"),
        (dict(handle="ok", method="qlora"), "lora"),
        (dict(handle="ok", epochs=99), "Epochs"),
        (dict(handle="ok", avatar_url="javascript:alert(1)"), "http"),
    ],
)
async def test_submit_validates_input_and_leaves_no_trace(settings, kwargs, message):
    core = await started(settings, run_queue=False)
    try:
        with pytest.raises(UserError, match=message):
            await core.trainings.submit(guild_id=1, tweets=tiny_tweets(), stats=STATS, **kwargs)
        assert await core.storage.jobs.list(1) == []
    finally:
        await core.close()


async def test_edit_model_checks_the_avatar_itself_for_the_cli(settings):
    """The Discord layer checks avatars in a transformer; the core checks again for the CLI."""
    core = await started(settings, run_queue=False)
    try:
        record = ModelRecord(
            guild_id=1, handle="alice", display_name="Alice", base_model="gpt2", method="lora", path="1/alice"
        )
        await core.storage.models.save(record)
        with pytest.raises(UserError, match="https://"):
            await core.edit_model(1, "alice", avatar="ftp://example.com/a.png")
        with pytest.raises(UserError, match="no model called"):
            await core.edit_model(2, "alice", display_name="Other")
        edited = await core.edit_model(
            1, "@Alice", display_name="Alice B", avatar="https://example.com/my a.png"
        )
        assert (edited.display_name, edited.avatar_url) == ("Alice B", "https://example.com/my%20a.png")
        assert (await core.edit_model(1, "alice", avatar="none")).avatar_url is None
    finally:
        await core.close()


@pytest.mark.parametrize(
    "n,prompt,message", [(0, "", "between 1 and"), (11, "", "between 1 and"), (1, "x" * 5000, "too long")]
)
async def test_generate_validates_input(settings, n, prompt, message):
    core = await started(settings, run_queue=False)
    try:
        with pytest.raises(UserError, match=message):
            await core.generate(1, "alice", prompt, n)
    finally:
        await core.close()


async def test_queue_cap_per_guild(settings):
    core = await started(settings, run_queue=False)
    try:
        for handle in ("a", "b", "c"):
            await core.trainings.submit(guild_id=1, handle=handle, tweets=tiny_tweets(), stats=STATS)
        with pytest.raises(UserError, match="already has 3 trainings"):
            await core.trainings.submit(guild_id=1, handle="d", tweets=tiny_tweets(), stats=STATS)
        await core.trainings.submit(guild_id=2, handle="d", tweets=tiny_tweets(), stats=STATS)
    finally:
        await core.close()


async def test_import_from_local_mirror_then_generate_and_delete(settings, tmp_path, tiny_base_model):
    import shutil

    mirror = tmp_path / "mirror"
    shutil.copytree(tiny_base_model, mirror / "huggingtweets" / "js_thrill")
    (mirror / "huggingtweets" / "js_thrill" / "README.md").write_text(HUGGINGTWEETS_CARD)
    core = await started(settings.replace(hf_local_mirror=str(mirror)), run_queue=False)
    try:
        model = await core.import_model(1, "huggingtweets/js_thrill", created_by=9)
        assert (model.handle, model.display_name, model.method) == ("js_thrill", "JS Thrill", "imported")
        assert model.stats == {"downloaded": 3250, "retweets": 40, "short": 449, "kept": 2761}
        _, tweets = await core.generate(1, "js_thrill", "My dream is", 2)
        assert len(tweets) == 2 and all(t.startswith("My dream is") for t in tweets)
        with pytest.raises(UserError, match="already exists"):
            await core.import_model(1, "huggingtweets/js_thrill")
        with pytest.raises(UserError, match="no model"):
            await core.generate(2, "js_thrill")
        # Without a mirror copy or network, the hub answers with a clear error and nothing is kept.
        with pytest.raises(UserError, match="Hugging Face hub"):
            await core.import_model(1, "huggingtweets/nobody_here")
        assert [m.handle for m in await core.list_models(1)] == ["js_thrill"]
        assert list((core.store.root / ".staging").iterdir()) == []
        await core.delete_model(1, "js_thrill")
        assert not (core.store.root / "1" / "js_thrill").exists()
    finally:
        await core.close()


@pytest.mark.parametrize("repo", ["", "no-slash", "../../etc/passwd", "a/b/c", "huggingtweets/..", "x/y z"])
async def test_import_refuses_bad_ids(settings, repo):
    core = await started(settings, run_queue=False)
    try:
        with pytest.raises(UserError):
            await core.import_model(1, repo)
        assert await core.list_models(1) == []
    finally:
        await core.close()


async def test_concurrent_requests_are_batched_and_a_broken_model_fails_alone(settings):
    core = await started(settings)
    try:
        for handle in ("alice", "bob"):
            job = await core.trainings.submit(guild_id=1, handle=handle, tweets=tiny_tweets(), stats=STATS)
            assert (await finished(core, job.id)).state == "done"
        calls = []
        original = core.generator.generate_batch
        core.generator.generate_batch = lambda requests: calls.append(len(requests)) or original(requests)
        (core.store.root / "1" / "bob" / "adapter_model.safetensors").write_bytes(b"broken")
        core.generator.forget(core.store.root / "1" / "bob")
        results = await asyncio.gather(
            *(core.generate(1, "alice", "", 1) for _ in range(5)),
            core.generate(1, "bob", "", 1),
            return_exceptions=True,
        )
        assert all(isinstance(r, tuple) and len(r[1]) == 1 for r in results[:5])
        assert isinstance(results[5], Exception)
        assert max(calls) > 1  # requests that arrived together shared a batch
    finally:
        await core.close()
