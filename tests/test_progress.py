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
