"""Training checkpoints, so a job interrupted by a restart resumes instead of starting over.

A checkpoint holds what the training loop needs to carry on exactly where it was: the trainable
weights (the LoRA adapters, or the whole model for a full fine-tune), the optimizer and
learning-rate schedule, the step, the torch random state and the loss history. The data order
needs no saving: each epoch's shuffle is replayed from the seed.

One checkpoint per job, in a folder of its own, as `step-<step>.pt`: written to a temp name,
flushed and renamed, then the older ones are removed. The step is in the name, so the highest
complete file says which step the job resumes from, and a kill at any moment leaves the last
complete checkpoint. A checkpoint made for other data or other settings is ignored (the
fingerprint differs), and the job starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PREFIX, SUFFIX = "step-", ".pt"


def fingerprint(config: dict[str, Any], tweets: list[str]) -> str:
    """Identifies the run: the same settings on the same tweets give the same fingerprint."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for tweet in tweets:
        digest.update(tweet.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


@dataclass
class LoopState:
    """Where the training loop stands; what a resumed run starts from."""

    step: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of that epoch already done
    tokens_seen: int = 0
    smoothed_loss: float | None = None
    initial_val: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float | None = None  # the lowest validation loss after an epoch so far
    best_epoch: int | None = None  # 1-based
    best_weights: dict[str, Any] | None = None  # that epoch's trainable weights, unless it is the latest
    resumed_from: int = 0
    guard_start: float | None = None  # the smoothed training loss the divergence guard measures from
    max_climb: float | None = None  # its highest rise over that start so far
    rollbacks: int = 0  # times the guard rolled back and halved the learning rate
    note: str | None = None  # what the run did by itself, for the progress message
    stopped_early: str | None = None  # why the run ended before its last epoch
    watch_val: float | None = None  # an update's loss on the old held-out posts, after training


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    files = sorted(Path(folder).glob(f"{PREFIX}*{SUFFIX}"))  # zero-padded steps sort in order
    return files[-1] if files else None


def stored_fingerprint(folder: str | os.PathLike) -> str | None:
    """The fingerprint of the run that wrote the latest checkpoint in `folder` (None: none, unreadable).

    Memory-mapped: only the small fingerprint is read, not the weights."""
    path = latest_checkpoint(folder)
    if path is None:
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("fingerprint")
    except Exception:  # unreadable: restore() ignores it too
        return None


def checkpoint_step(folder: str | os.PathLike) -> int | None:
    """The step of the latest checkpoint in `folder`, or None when there is none."""
    latest = latest_checkpoint(folder)
    try:
        return int(latest.name[len(PREFIX) : -len(SUFFIX)]) if latest else None
    except ValueError:
        return None


class Checkpointer:
    def __init__(self, folder: str | os.PathLike, every_seconds: float, run_fingerprint: str):
        self.folder = Path(folder)
        self.every_seconds = every_seconds
        self.fingerprint = run_fingerprint
        self.last_saved = time.monotonic()

    def clear(self) -> None:
        """Remove this folder's checkpoints (a run that starts over needs none of them)."""
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                path.unlink(missing_ok=True)

    def due(self) -> bool:
        return self.every_seconds > 0 and time.monotonic() - self.last_saved >= self.every_seconds

    def save(self, model, optimizer, scheduler, loop: LoopState) -> None:
        trainable = {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}
        state = {
            "fingerprint": self.fingerprint,
            "weights": trainable,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "loop": {k: v for k, v in vars(loop).items() if k != "resumed_from"},
        }
        self.last_saved = time.monotonic()
        path = self.folder / f"{PREFIX}{loop.step:08d}{SUFFIX}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, lambda f: torch.save(state, f))
        except (OSError, RuntimeError) as exc:  # disk full...: the training itself goes on
            log.warning("Could not save a checkpoint in %s (%s); the previous one stays", self.folder, exc)
            with contextlib.suppress(OSError):
                path.with_name(path.name + ".tmp").unlink(missing_ok=True)
            return
        for older in self.folder.iterdir():
            if older != path:
                older.unlink(missing_ok=True)
        log.info("Checkpoint saved at step %s in %s", loop.step, self.folder)

    def restore(self, model, optimizer, scheduler) -> LoopState | None:
        """Load the checkpoint into model, optimizer and scheduler; None if there is none to use."""
        path = latest_checkpoint(self.folder)
        if path is None:
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable: better to start over than to fail the job
            log.warning("Ignoring unreadable checkpoint %s (%s)", path, exc)
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.info("Ignoring checkpoint %s: it was made for other data or settings", path)
            return None
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        if set(state["weights"]) != trainable:
            log.warning("Ignoring checkpoint %s: it does not fit this model", path)
            return None
        model.load_state_dict(state["weights"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        loop = LoopState(**state["loop"])
        loop.resumed_from = loop.step
        log.info("Resuming from the checkpoint at step %s", loop.step)
        return loop


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
