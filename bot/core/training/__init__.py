"""Training a persona: the base (hub id, folder or GGUF file), the fine-tuning loop with its data and
guard rails, checkpoints, progress, the voice report, and the queues that run one training (in this process or
on workers)."""

# Not remote_queue: it loads procrastinate, which only the scale-out mode needs.
from bot.core.training.bases import check_base
from bot.core.training.local_queue import TrainingQueue
from bot.core.training.loop import train
from bot.core.training.recipe import TrainConfig, TrainingCancelled, TrainProgress, TrainResult
from bot.core.training.trainings import Trainings
from bot.core.training.trainrun import JobOutcome, TrainingBackend, train_config
from bot.core.training.update import UpdatePlan, continued_line, queued_line
from bot.core.training.voicereport import report_line

__all__ = [
    "report_line",
    "continued_line",
    "queued_line",
    "UpdatePlan",
    "JobOutcome",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingBackend",
    "TrainingCancelled",
    "TrainingQueue",
    "Trainings",
    "check_base",
    "train",
    "train_config",
]
