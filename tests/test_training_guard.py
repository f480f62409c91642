"""The training's own safety nets: the divergence guard and the never-worse-than-the-base rule."""

import dataclasses

import pytest

from bot.core.errors import NoImprovement, TrainingError
from bot.core.training.loop import train
from bot.core.training.recipe import TrainConfig
from bot.discord.ui import progress_text
from tests.conftest import tiny_tweets

# A full fine-tune of the tiny GPT-2 at this rate: the loss climbs from ~6.2 to ~10.8 within three
# steps (at 0.05 it falls steadily, at 0.2 it rises 0.8 over its start at worst).
DIVERGENT_LR = 1.0


def config(base, **kw) -> TrainConfig:
    defaults = dict(base_model=base, epochs=1, batch_size=8, block_size=64, learning_rate=3e-3, max_steps=15)
    return TrainConfig(**(defaults | kw))


def train_losses(result) -> list[float]:
    return [h["train_loss"] for h in result.history if "train_loss" in h]


def test_a_healthy_run_is_never_touched(tiny_base_model, tmp_path):
    """A run whose loss goes down: no roll-back, no note, the very losses of a run without the guard."""
    seen = []
    cfg = config(tiny_base_model, epochs=2, max_steps=0)
    guarded = train(tiny_tweets(), tmp_path / "guarded", cfg, progress=seen.append)
    m = guarded.metrics
    assert m["rollbacks"] == 0 and m["note"] is None and m["max_loss_climb"] < cfg.divergence_margin
    assert all(p.note is None for p in seen) and m["val_loss"] < m["initial_val_loss"]
    unguarded = train(tiny_tweets(), tmp_path / "unguarded", dataclasses.replace(cfg, max_rollbacks=0))
    assert train_losses(guarded) == train_losses(unguarded)
    assert m["val_loss"] == unguarded.metrics["val_loss"]


def test_a_divergent_learning_rate_is_rolled_back_and_the_run_recovers(tiny_base_model, tmp_path):
    """A learning rate far too high: the smoothed loss climbs over the margin, the guard rolls back to
    the last good weights and halves the rate (at most twice), says so, and the persona beats the base
    without the retry at a lower rate."""
    seen = []
    cfg = config(tiny_base_model, method="full", learning_rate=DIVERGENT_LR, max_steps=0, epochs=2)
    result = train(tiny_tweets(), tmp_path / "out", cfg, progress=seen.append)
    m = result.metrics
    assert 1 <= m["rollbacks"] <= cfg.max_rollbacks
    assert m["val_loss"] < m["initial_val_loss"] and m["learning_rate"] == DIVERGENT_LR  # no retry needed
    rollbacks = [h for h in result.history if "rollback_to" in h]
    assert len(rollbacks) == m["rollbacks"] and all(h["rollback_to"] < h["step"] for h in rollbacks)
    notes = [p.note for p in seen if p.note]
    assert notes and "rolled back to step" in notes[-1] and "halved the learning rate" in notes[-1]
    assert "halved the learning rate" in progress_text(next(p for p in seen if p.note))


def test_no_improvement_is_retried_at_a_quarter_of_the_rate_then_fails_and_saves_nothing(
    tiny_base_model, tmp_path
):
    seen = []
    # The weights do not move: no better than the base.
    cfg = config(tiny_base_model, learning_rate=1e-12, token_rows_learning_rate=1e-12)
    with pytest.raises(NoImprovement) as raised:
        train(tiny_tweets(), tmp_path / "out", cfg, progress=seen.append)
    error = raised.value
    assert isinstance(error, TrainingError)
    assert str(error).startswith("the posts did not improve the model: held-out perplexity")
    assert " before → " in str(error) and "Nothing was saved" in str(error)
    assert error.learning_rates == [1e-12, 0.25e-12]
    assert [p.phase for p in seen].count("loading") == 2  # the retry loaded the base again
    assert any(p.note and "trying again at 2.5e-13" in p.note for p in seen)
    assert not (tmp_path / "out").exists()


def test_a_retry_that_beats_the_base_is_the_persona(tiny_base_model, tmp_path):
    """The divergent rate without the guard: worse than the base; its retry at a quarter is kept."""
    seen = []
    cfg = config(tiny_base_model, method="full", learning_rate=DIVERGENT_LR, max_steps=0, max_rollbacks=0)
    cfg = dataclasses.replace(cfg, epochs=2)
    result = train(tiny_tweets(), tmp_path / "out", cfg, progress=seen.append)
    m = result.metrics
    assert m["learning_rate"] == DIVERGENT_LR / 4 and result.config["learning_rate"] == DIVERGENT_LR / 4
    assert m["val_loss"] < m["initial_val_loss"]
    assert any(p.note and "trying again" in p.note for p in seen)
    assert (tmp_path / "out" / "model.safetensors").is_file()


async def test_a_job_that_does_not_improve_the_base_fails_and_publishes_nothing(settings):
    """Through the queue: the job fails with the reason (what the requester is told), no persona is
    registered or stored, and nothing is left staged."""
    from bot.core.service import PersonaService
    from tests.conftest import on_finished

    still = settings.model_copy(
        update={"train_learning_rate": 1e-12, "train_token_rows_learning_rate": 1e-12}
    )
    core = PersonaService(still)
    await core.start()
    try:
        import asyncio

        done = asyncio.get_running_loop().create_future()
        on_finished(core, lambda outcome: done.done() or done.set_result(outcome))
        job = await core.trainings.submit(
            guild_id=1, handle="alice", tweets=tiny_tweets(), stats={"kept": 400}
        )
        outcome = await asyncio.wait_for(done, 300)
        assert outcome.state == "failed" and outcome.model is None
        assert outcome.error.startswith("the posts did not improve the model: held-out perplexity")
        assert (await core.storage.jobs.get(1, job.id)).error == outcome.error
        assert await core.storage.models.get(1, "alice") is None
        assert not core.store.model_dir(1, "alice").exists()
        assert list((core.store.root / ".staging").iterdir()) == []
    finally:
        await core.close()
