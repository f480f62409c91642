"""The loop's guard rail against divergence: a good state kept every few steps while the smoothed loss
is at or below its start, and a roll-back with half the learning rate when it climbs too far."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from bot.core.training.progress import rollback_note

if TYPE_CHECKING:  # the loop imports this module; the guard only reads the run it is given
    from bot.core.training.loop import TrainingRun

log = logging.getLogger(__name__)


# The guard keeps a good state to roll back to every this many steps (while the loss is not
# climbing): a full fine-tune's copy of weights and optimizer moments costs ~3x the model's size.
GOOD_STATE_EVERY = 20


@dataclass
class GoodState:
    """Trainable weights and optimizer state at a step where training was healthy."""

    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]

    @classmethod
    def of(cls, run: TrainingRun) -> GoodState:
        weights = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
        return cls(run.state.step, weights, copy.deepcopy(run.optimizer.state_dict()))

    def restore(self, run: TrainingRun) -> None:
        with torch.no_grad():
            for name, parameter in run.model.named_parameters():
                if name in self.weights:
                    parameter.copy_(self.weights[name])
        run.optimizer.load_state_dict(copy.deepcopy(self.optimizer))


def guard_divergence(run: TrainingRun) -> None:
    """Roll back to the last good state and halve the learning rate when the smoothed training loss
    has climbed `divergence_margin` nats above its first value (at most `max_rollbacks` times)."""
    state, config = run.state, run.config
    if state.smoothed_loss is None:
        return
    if state.guard_start is None:
        state.guard_start = state.smoothed_loss
    climb = state.smoothed_loss - state.guard_start
    state.max_climb = climb if state.max_climb is None else max(state.max_climb, climb)
    if climb > config.divergence_margin and state.rollbacks < config.max_rollbacks and run.good is not None:
        state.rollbacks += 1
        run.good.restore(run)
        scheduler = run.scheduler
        scheduler.base_lrs = [lr * 0.5 for lr in scheduler.base_lrs]
        for group, base, factor in zip(
            run.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(scheduler.last_epoch)  # where the schedule stands, halved
        state.note = rollback_note(
            state.guard_start, state.smoothed_loss, run.good.step, state.rollbacks, config.max_rollbacks
        )
        log.warning("Step %s: %s", state.step, state.note)
        state.history.append(
            {"step": state.step, "rollback_to": run.good.step, "lr_scale": 0.5**state.rollbacks}
        )
        state.smoothed_loss = None  # smoothed afresh from the rolled-back weights' losses
    elif climb <= 0 and state.step - run.good_step() >= GOOD_STATE_EVERY:
        run.good = GoodState.of(run)


def trainable_copy(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}
