"""Personas that grow: an update continues the current version with the posts it has not seen (old
held-out posts kept, a replay of the old ones), versions v1, v2, ... are kept for rollback up to
PERSONA_VERSIONS_KEPT, and a persona's deletion takes every version with it."""

import json

import pytest

from bot.core.errors import UserError
from bot.core.handles import RegistryError
from bot.core.personas import kept_posts, read_card
from bot.core.service import PersonaService
from bot.core.storage import ModelRecord, Storage
from bot.core.training.update import REPLAY_MIN, merged_stats, plan_update
from tests.conftest import on_finished, tiny_tweets
from tests.test_cli import cli

POSTS = tiny_tweets()  # 400 distinct posts
FIRST, LATER = POSTS[:200], POSTS[150:]  # 50 posts in both


def test_an_update_plan_keeps_the_old_held_out_posts_and_replays_some_old_ones():
    old_train, old_held = POSTS[:270], POSTS[270:300]
    uploaded = POSTS[250:] + [POSTS[260].upper(), "  " + POSTS[10]]  # seen ones, written differently
    plan = plan_update((old_train, old_held), uploaded, 0.1, 42)
    assert plan.new_posts == 100 and plan.repeated == len(uploaded) - 100
    new = set(POSTS[300:])
    assert plan.held_out[:30] == old_held and set(plan.held_out[30:]) <= new and len(plan.held_out) == 40
    new_train = [p for p in plan.train if p in new]
    assert len(new_train) == 90 and plan.replayed == REPLAY_MIN == len(plan.train) - 90
    assert set(plan.train) - new <= set(old_train)
    assert plan.all_train == old_train + new_train and not set(plan.all_train) & set(plan.held_out)
    stats = merged_stats(
        {"downloaded": 330, "duplicates": 2, "kept": 300}, {"downloaded": 152, "kept": 152}, plan
    )
    assert stats == {"downloaded": 482, "duplicates": 2 + plan.repeated, "kept": 400}
    with pytest.raises(UserError, match="None of the 3 posts in that file is new to `al`"):
        plan_update((old_train, old_held), [POSTS[0], POSTS[280], POSTS[0]], 0.1, 42, "al")


def _record(version: int, **kw) -> ModelRecord:
    path = "1/alice" if version == 1 else f"1/alice.v{version}"
    return ModelRecord(
        1, "alice", "Alice", "gpt2", "lora", path, version=version, metrics={"v": version}, **kw
    )


async def test_the_registry_keeps_earlier_versions_and_rolls_back(db_url):
    storage = await Storage.open(db_url)
    try:
        assert await storage.models.publish(_record(1), keep=2) == []
        await storage.models.publish(_record(2), keep=2)
        await storage.models.update_profile(1, "alice", display_name="Alice Renamed")
        await storage.models.publish(_record(3), keep=2)
        dropped = await storage.models.publish(_record(4), keep=2)
        assert [d.version for d in dropped] == [1]
        assert [v.version for v in await storage.models.versions(1, "alice")] == [3, 2]
        back, gone = await storage.models.rollback(1, "alice")
        assert (back.version, gone.version, back.path, back.metrics) == (3, 4, "1/alice.v3", {"v": 3})
        current = await storage.models.get(1, "alice")
        assert current.version == 3 and current.path == "1/alice.v3"
        assert [v.version for v in await storage.models.versions(1, "alice")] == [2]
        await storage.models.rollback(1, "alice")
        assert await storage.models.rollback(1, "alice") is None  # v2 is the oldest kept
        await storage.models.delete(1, "alice")
        assert (
            await storage.models.versions(1, "alice") == [] and await storage.models.get(1, "alice") is None
        )
    finally:
        await storage.close()


async def _train(core, handle="alice", tweets=FIRST, **kw):
    await core.trainings.submit(guild_id=1, handle=handle, tweets=tweets, stats={"kept": len(tweets)}, **kw)
    await core.trainings.wait_idle(timeout=240)
    return await core.get_model(1, handle)


async def _update(core, tweets=LATER, handle="alice"):
    job, plan = await core.trainings.update(guild_id=1, handle=handle, tweets=tweets, stats={"kept": 250})
    outcomes = []
    on_finished(core, outcomes.append)
    await core.trainings.wait_idle(timeout=240)
    return job, plan, outcomes


@pytest.mark.parametrize("method", ["lora", "full"])
async def test_an_update_continues_the_persona_and_rollback_goes_back(settings, method):
    core = PersonaService(settings.replace(voice_report_posts=0))
    await core.start()
    try:
        v1 = await _train(core, method=method)
        job, plan, outcomes = await _update(core)
        assert job.continues == 1 and job.method == method and plan.new_posts == 200
        [outcome] = outcomes
        assert outcome.state == "done", outcome.error
        v2 = await core.get_model(1, "alice")
        m = v2.metrics
        assert (v2.version, v2.path, m["continued_from"], m["new_posts"]) == (2, "1/alice.v2", 1, 200)
        # It started from v1's weights: the posts v1 was judged on fit as well as v1 left them.
        assert m["old_held_out_loss_before"] == pytest.approx(v1.metrics["val_loss"])
        assert m["initial_val_loss"] < v1.metrics["initial_val_loss"] - 0.1
        train, held_out = kept_posts(core.store.resolve(v2.path))
        _, v1_held = kept_posts(core.store.resolve(v1.path))
        assert held_out[: len(v1_held)] == v1_held and len(set(train) | set(held_out)) == 400
        assert v2.stats["kept"] == 400 and v2.stats["duplicates"] == 50
        card = (core.store.resolve(v2.path) / "README.md").read_text()
        assert "Version 2: continued from version 1 with 200 new posts" in card
        assert read_card(core.store.resolve(v2.path)).stats["kept"] == 400
        _, posts = await core.generate(1, "alice", "", 2)
        assert len(posts) == 2

        back, gone = await core.versions.rollback(1, "alice")
        assert (back.version, gone.version) == (1, 2)
        assert (await core.get_model(1, "alice")).path == "1/alice"
        assert not core.store.resolve("1/alice.v2").exists() and core.store.resolve("1/alice").is_dir()
        with pytest.raises(UserError, match="no earlier version"):
            await core.versions.rollback(1, "alice")
    finally:
        await core.close()


async def test_bad_updates_are_refused_and_nothing_is_queued(settings):
    core = PersonaService(settings.replace(voice_report_posts=0))
    await core.start()
    try:
        with pytest.raises(RegistryError, match="no model called `nobody`"):
            await core.trainings.update(guild_id=1, handle="nobody", tweets=LATER, stats={})
        await _train(core)
        with pytest.raises(UserError, match="None of the 100 posts in that file is new to `alice`"):
            await core.trainings.update(guild_id=1, handle="alice", tweets=FIRST[:100], stats={})
        await core.trainings.update(guild_id=1, handle="alice", tweets=LATER, stats={})
        with pytest.raises(UserError, match="already queued or training"):
            await core.trainings.update(guild_id=1, handle="alice", tweets=POSTS[300:], stats={})
        with pytest.raises(UserError, match="is training"):
            await core.versions.rollback(1, "alice")
        await core.trainings.wait_idle(timeout=240)
        assert [j.continues for j in await core.trainings.list(1)] == [1, None]
        await core.storage.models.set_sources(1, "alice", [555])  # a member's own voice
        with pytest.raises(UserError, match="only they can train it"):
            await core.trainings.update(guild_id=1, handle="alice", tweets=POSTS[300:], stats={})
    finally:
        await core.close()


async def test_old_versions_beyond_the_setting_go_with_their_files(settings):
    core = PersonaService(settings.replace(voice_report_posts=0, persona_versions_kept=1))
    await core.start()
    try:
        await _train(core)
        # An update that died after writing its folder, before the registry took it: v1 still
        # serves, and the next publish of v2 replaces the leftover.
        leftover = core.store.model_dir(1, "alice", 2)
        leftover.mkdir(parents=True)
        (leftover / "junk").write_text("half written")
        assert (await core.get_model(1, "alice")).version == 1
        await _update(core)
        assert not (leftover / "junk").exists() and (leftover / "adapter_config.json").is_file()
        v3 = await _train(core, tweets=POSTS[200:])  # a new training over it is the next version too
        assert (
            v3.version == 3
            and "Version 3: trained anew" in (core.store.resolve(v3.path) / "README.md").read_text()
        )
        assert [v.version for v in await core.versions.earlier(1, "alice")] == [2]
        assert not core.store.model_dir(1, "alice").exists()  # v1 is beyond PERSONA_VERSIONS_KEPT=1
        await core.delete_model(1, "alice")
        assert list(core.store.model_dir(1, "alice").parent.iterdir()) == []
        assert await core.versions.earlier(1, "alice") == []
    finally:
        await core.close()


def test_the_cli_continues_a_persona_and_rolls_it_back(settings, tmp_path):
    first, later = tmp_path / "first.txt", tmp_path / "later.txt"
    first.write_text("\n".join(FIRST))
    later.write_text("\n".join(LATER))
    args = ("--guild", "7", "--handle", "alice")
    assert cli(settings, "train", *args, "--file", str(first)).returncode == 0
    missing = cli(settings, "train", "--guild", "7", "--handle", "bob", "--file", str(later), "--continue")
    assert missing.returncode == 2 and "no model called `bob`" in missing.stderr
    updated = cli(settings, "train", *args, "--file", str(later), "--continue")
    assert updated.returncode == 0, updated.stderr
    assert "Continues from v1 with 200 new posts (50 it had seen already)" in updated.stdout
    assert "version v2, continued from v1 with 200 new posts" in updated.stdout
    assert "v2" in cli(settings, "list", "--guild", "7").stdout
    again = cli(settings, "train", *args, "--file", str(later), "--continue")
    assert again.returncode == 2 and "is new to `alice`" in again.stderr
    rolled = cli(settings, "rollback", *args)
    assert rolled.returncode == 0 and "alice is back to v1; v2 was deleted." in rolled.stdout
    info = json.loads((settings.models_path / "7" / "alice" / "training.json").read_text())
    assert info["metrics"]["val_loss"] is not None
