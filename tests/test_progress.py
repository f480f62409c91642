"""The ETA shown in Discord: remaining steps x the mean measured step time (a controlled clock)."""

from bot.core.training.progress import StepTimer
from bot.core.training.recipe import TrainProgress
from bot.discord.ui import progress_text


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_eta_is_remaining_steps_times_the_mean_measured_step_time():
    clock = Clock()
    timer = StepTimer(clock)
    assert timer.eta(10) is None  # nothing measured yet
    for seconds in (2.0, 4.0, 3.0):  # three steps of 2, 4 and 3 s
        timer.start()
        clock.now += seconds
        timer.stop()
        clock.now += 50.0  # a validation pass or a checkpoint between steps is not a step
    assert timer.mean == 3.0
    assert timer.eta(7) == 21.0 and timer.eta(0) == 0.0

    shown = progress_text(
        TrainProgress(phase="training", step=3, total_steps=10, epoch=1, loss=2.5, eta_seconds=timer.eta(7))
    )
    assert "step 3/10" in shown and "ETA 21s" in shown


def test_training_reports_an_eta_from_its_own_steps(tiny_base_model, tmp_path):
    from bot.core.training.loop import train
    from bot.core.training.recipe import TrainConfig
    from tests.conftest import tiny_tweets

    seen = []
    config = TrainConfig(base_model=tiny_base_model, max_steps=4, block_size=64)
    train(tiny_tweets(), tmp_path / "out", config, progress=seen.append)
    etas = [p.eta_seconds for p in seen if p.phase == "training"]
    assert len(etas) == 4 and etas[-1] == 0.0 and all(e is not None and e >= 0 for e in etas)


def held_out_losses(monkeypatch, losses):
    """The run's held-out evaluations return these losses in turn (the base's first)."""
    from bot.core.training.loop import TrainingRun

    values = iter(losses)
    monkeypatch.setattr(TrainingRun, "evaluate", lambda self: next(values))


def test_training_stops_when_the_held_out_loss_stops_improving(tiny_base_model, tmp_path, monkeypatch):
    from bot.core.training.loop import train
    from bot.core.training.recipe import TrainConfig
    from tests.conftest import tiny_tweets

    held_out_losses(monkeypatch, [4.0, 3.0, 2.0, 2.5, 1.0, 1.0, 1.0])
    seen = []
    config = TrainConfig(base_model=tiny_base_model, epochs=6, patience=1, block_size=64, batch_size=64)
    result = train(tiny_tweets(), tmp_path / "out", config, progress=seen.append)
    m = result.metrics
    assert m["epochs_run"] == 3 and m["best_epoch"] == 2 and m["val_loss"] == 2.0
    assert "stopped after epoch 3 of 6" in m["stopped_early"] and "best after epoch 2" in m["stopped_early"]
    shown = progress_text(next(p for p in seen if p.phase == "training" and p.eta_seconds is not None))
    assert "ETA at most" in shown and "may end sooner" in shown


def test_the_eta_is_exact_when_the_run_cannot_stop_early(tiny_base_model, tmp_path, monkeypatch):
    from bot.core.training.loop import train
    from bot.core.training.recipe import TrainConfig
    from tests.conftest import tiny_tweets

    held_out_losses(monkeypatch, [4.0, 3.0, 3.5])
    seen = []
    config = TrainConfig(base_model=tiny_base_model, epochs=2, patience=1, block_size=64, batch_size=64)
    m = train(tiny_tweets(), tmp_path / "out", config, progress=seen.append).metrics
    assert m["epochs_run"] == 2 and m["best_epoch"] == 1 and m["stopped_early"] is None
    shown = progress_text(next(p for p in seen if p.phase == "training" and p.eta_seconds is not None))
    assert "ETA" in shown and "at most" not in shown


def test_patience_zero_runs_every_epoch(tiny_base_model, tmp_path, monkeypatch):
    from bot.core.training.loop import train
    from bot.core.training.recipe import TrainConfig
    from tests.conftest import tiny_tweets

    held_out_losses(monkeypatch, [4.0, 3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    config = TrainConfig(base_model=tiny_base_model, epochs=6, patience=0, block_size=64, batch_size=64)
    m = train(tiny_tweets(), tmp_path / "out", config).metrics
    assert m["epochs_run"] == 6 and m["best_epoch"] == 2 and m["stopped_early"] is None
