import os

import pytest

from bot.core.personas.modelstore import ModelStore, StoreError


def make_staged(store: ModelStore, guild: int, handle: str, content: str):
    staging = store.new_staging_dir(guild, handle)
    (staging / "weights.txt").write_text(content)
    return staging


def test_publish_replaces_atomically_and_leaves_nothing_behind(tmp_path):
    store = ModelStore(tmp_path / "models")
    final = store.publish(make_staged(store, 1, "alice", "v1"), 1, "alice")
    assert final == tmp_path / "models" / "1" / "alice"
    store.publish(make_staged(store, 1, "alice", "v2"), 1, "alice")
    assert (final / "weights.txt").read_text() == "v2"
    assert list((tmp_path / "models" / ".staging").iterdir()) == []
    assert list((tmp_path / "models" / ".trash").iterdir()) == []


def test_recover_removes_unfinished_and_restores_interrupted_swap(tmp_path):
    store = ModelStore(tmp_path / "models")
    make_staged(store, 1, "half", "partial")  # killed while writing: never published
    final = store.publish(make_staged(store, 1, "alice", "v1"), 1, "alice")
    # Simulate death between "move old away" and "move new in".
    trash = tmp_path / "models" / ".trash" / "1__alice__deadbeef"
    trash.parent.mkdir(exist_ok=True)
    os.replace(final, trash)
    actions = store.recover()
    assert (final / "weights.txt").read_text() == "v1"
    assert any("restored" in a for a in actions)
    assert list((tmp_path / "models" / ".staging").iterdir()) == []
    assert list((tmp_path / "models" / ".trash").iterdir()) == []


def test_remove(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.publish(make_staged(store, 3, "bob", "x"), 3, "bob")
    store.remove(3, "bob")
    assert not store.model_dir(3, "bob").exists()
    store.remove(3, "bob")  # idempotent


def test_unwritable_store_raises_store_error(tmp_path):
    # A file where the store's folder should be fails even for root (unlike chmod).
    root = tmp_path / "models"
    root.write_text("not a folder")
    with pytest.raises(StoreError, match="Cannot create"):
        ModelStore(root).new_staging_dir(1, "alice")


def test_start_up_keeps_only_the_checkpoints_of_jobs_that_will_run(tmp_path):
    store = ModelStore(tmp_path / "models")
    for job_id in (1, 2, 3):
        store.checkpoint_dir(job_id).mkdir(parents=True)
        (store.checkpoint_dir(job_id) / "step-00000001.pt").write_bytes(b"x")
    (store.checkpoint_dir(1).parent / "stray").mkdir()
    store.drop_checkpoints_except({2})
    assert [p.name for p in store.checkpoint_dir(1).parent.iterdir()] == ["job-2"]
    store.drop_checkpoint(2)
    assert list(store.checkpoint_dir(1).parent.iterdir()) == []
