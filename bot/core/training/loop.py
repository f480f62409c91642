"""Fine-tune a GPT-2 style model on one person's tweets (huggingtweets' recipe, LoRA by default).

The recipe, as huggingtweets did it: every tweet is wrapped as `<|endoftext|>tweet<|endoftext|>`,
the tweets are shuffled each pass (4 passes by default), concatenated and cut into blocks
(packing, as `run_clm.py` does, so no compute is spent on padding), and trained with AdamW and a
cosine schedule. 10% of the tweets are held out to report validation loss and perplexity.

`train()` is synchronous and meant to run in a worker thread: it reports progress through a
callback (called from that thread) and checks a `threading.Event` between steps to cancel.

Beside it: what a run is asked to do (recipe.py), its data (data.py), the adapters (adapters.py), the
divergence guard (guard.py) and the base it starts from (bases.py).
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from bot.core.devices import (
    MODEL_BUILD_LOCK,
    autocast,
    autocast_dtype,
    fitted_batch_size,
    fused_optimizer,
    gpu_memory_bytes,
    pick_device,
    reusing_freed_memory,
    training_attention,
)
from bot.core.errors import NoImprovement, TrainingError
from bot.core.generation.decoding import position_limit
from bot.core.training.adapters import (
    continue_lora,
    fast_lora_layers,
    fast_token_rows,
    frozen_weights_in,
    parameter_groups,
    wrap_lora,
)
from bot.core.training.bases import default_bases_dir, describe, loadable
from bot.core.training.checkpoint import Checkpointer, LoopState, fingerprint, stored_fingerprint
from bot.core.training.data import TrainData, frequent_tokens, make_batch, prepare_data
from bot.core.training.guard import GoodState, guard_divergence, trainable_copy
from bot.core.training.headloss import causal_lm_loss
from bot.core.training.progress import StepTimer, retry_note
from bot.core.training.recipe import (
    MIN_IMPROVEMENT,
    RETRY_LR_FACTOR,
    TrainConfig,
    TrainingCancelled,
    TrainingInterrupted,
    TrainProgress,
    TrainResult,
    default_epochs,
)

log = logging.getLogger(__name__)

TRAINING_INFO_FILE = "training.json"


def load_base_model(
    base_model: str, device: torch.device, bases_dir: str | None = None, attention: str | None = None
):
    """The base and its tokenizer: a hub id, a local folder, or a GGUF file (dequantized once);
    `attention` picks transformers' attention implementation (None: its default)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = loadable(base_model, bases_dir or default_bases_dir())
    options = {"attn_implementation": attention} if attention else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **options)
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"Could not load the base model {base_model!r}: it must be a Hugging Face hub id "
            f"reachable from this machine, a local model folder or a .gguf file ({exc.__class__.__name__})."
        ) from exc
    if tokenizer.eos_token_id is None and isinstance(getattr(model.config, "eos_token_id", None), int):
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(model.config.eos_token_id)
    if tokenizer.eos_token_id is None:
        raise TrainingError(f"The base model {base_model!r} has no end-of-text token.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


@torch.no_grad()
def evaluate(
    model, blocks: list[list[int]], batch_size: int, pad_id: int, device, amp_dtype, chunked: bool = True
) -> float | None:
    """Mean loss per predicted token over the validation blocks."""
    if not blocks:
        return None
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        rows = blocks[i : i + batch_size]
        batch = make_batch(rows, pad_id, device)
        with autocast(device, amp_dtype):
            loss = causal_lm_loss(model, batch, amp_dtype, chunked)
        tokens = sum(len(row) - 1 for row in rows)
        total_loss += float(loss) * tokens
        total_tokens += tokens
    model.train()
    return total_loss / max(1, total_tokens)


def _recorded_config(config: TrainConfig) -> dict[str, Any]:
    """The hyper-parameters of a run (where its checkpoints and bases are kept is not one); a GGUF
    base is recorded by file name and sha256."""
    recorded = {
        k: v
        for k, v in asdict(config).items()
        if not k.startswith("checkpoint_") and k not in ("bases_dir", "start_from")
    }
    return recorded | {"base_model": describe(config.base_model)}


def _tokens_since(history: list[dict[str, Any]], step: int) -> int:
    """Training tokens seen after `step` (a resumed run's own share)."""
    counts = [(h["step"], h["tokens"]) for h in history if "tokens" in h]
    if not counts:
        return 0
    return counts[-1][1] - max((tokens for s, tokens in counts if s <= step), default=0)


@dataclass
class TrainingRun:
    """What the training loop works with, prepared once by `train()`."""

    config: TrainConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    model: Any
    tokenizer: Any
    data: TrainData
    total_steps: int
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    checkpointer: Checkpointer | None
    state: LoopState
    report: Callable[[TrainProgress], None]
    started: float
    train_started: float = 0.0
    step_timer: StepTimer = field(default_factory=StepTimer)
    good: GoodState | None = None  # what the divergence guard rolls back to

    def good_step(self) -> int:
        return self.good.step if self.good is not None else 0

    def progress(self, phase: str, **kw: Any) -> TrainProgress:
        """A progress report of this run, carrying its note (a roll-back, a retry) once there is one."""
        state = self.state
        base = dict(step=state.step, total_steps=self.total_steps, loss=state.smoothed_loss)
        # A stop needs `patience` epochs after the best one, before the last: with 2 epochs and
        # patience 1 the run always trains both, and the ETA is not "at most".
        early = bool(self.config.patience) and self.config.epochs > self.config.patience + 1
        return TrainProgress(phase=phase, **(base | kw), note=state.note, may_end_early=early)

    def evaluate(self, blocks: list[list[int]] | None = None) -> float | None:
        """Mean loss on the held-out blocks (or on `blocks`)."""
        cfg = self.config
        return evaluate(
            self.model,
            self.data.val_blocks if blocks is None else blocks,
            cfg.batch_size,
            self.tokenizer.pad_token_id,
            self.device,
            self.amp_dtype,
            cfg.chunked_loss,
        )


def train(
    tweets: list[str],
    output_dir: str | Path,
    config: TrainConfig,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
    interrupt: threading.Event | None = None,
    held_out: list[str] | None = None,
    watch: list[str] | None = None,
) -> TrainResult:
    """Fine-tune `config.base_model` (or the persona at `config.start_from`) on `tweets` and save
    model + tokenizer in `output_dir`; `held_out` fixes the held-out posts (else `val_fraction` of
    `tweets`), the loss on `watch` (an update's old held-out posts) is measured on the kept weights.

    Between steps, `cancel` stops the run for good; `interrupt` (a shutdown) stops it after
    saving a checkpoint, so the job resumes where it was at the next start. After each epoch the
    model is evaluated on the held-out tweets; with `keep_best` the best epoch's weights are saved.

    Never worse than the base: the base's own held-out loss is a candidate too. A run whose best
    epoch does not beat it is tried once more at a quarter of the learning rate; if that does not
    beat it either, `NoImprovement` is raised and nothing is saved.
    """
    if len(tweets) < 2:
        raise TrainingError("At least two tweets are needed to train.")
    if config.method not in ("lora", "full"):
        raise TrainingError(f"Unknown training method {config.method!r} (use lora or full).")
    report = progress or (lambda p: None)
    if config.epochs is None:
        config = replace(config, epochs=default_epochs(config.method, len(tweets) + len(held_out or [])))
    with reusing_freed_memory():
        run, train_seconds = _fit((tweets, held_out, watch), config, report, cancel, interrupt)
    report(run.progress("saving"))
    _restore_best(run)
    if run.data.watch_blocks:
        run.state.watch_val = run.evaluate(run.data.watch_blocks)
    return save_result(run, Path(output_dir), train_seconds)


def _fit(posts, config: TrainConfig, report, cancel, interrupt) -> tuple[TrainingRun, float]:
    """Train, and once more at a quarter of the learning rates when that did not beat the starting
    weights; the run that did, or NoImprovement."""
    started = time.monotonic()
    report(TrainProgress(phase="loading"))
    retry = replace(
        config,
        learning_rate=config.lr * RETRY_LR_FACTOR,
        token_rows_learning_rate=config.token_rows_lr * RETRY_LR_FACTOR,
    )
    attempts = [config, retry]
    # A job interrupted during its retry resumes the retry (its checkpoint carries its settings).
    first = 1 if _has_checkpoint_of(attempts[1], posts[0]) else 0
    best_after: list[float] = []
    for attempt in range(first, len(attempts)):
        run = _prepare_run(posts, attempts[attempt], report, started)
        if attempt:
            run.state.note = run.state.note or retry_note(config.lr, attempts[attempt].lr)
            report(run.progress("loading"))
        train_seconds = _train_loop(run, cancel, interrupt)
        kept = _kept_val(run)
        if kept is None or run.state.initial_val is None or kept < run.state.initial_val - MIN_IMPROVEMENT:
            return run, train_seconds
        best_after.append(kept)
        log.info(
            "Validation loss %.4f did not beat %.4f at lr %g", kept, run.state.initial_val, run.config.lr
        )
        if attempt + 1 == len(attempts):
            than = "the persona" if config.start_from else "the model"
            raise NoImprovement(
                run.state.initial_val, min(best_after), [a.lr for a in attempts[first:]], than
            )
        if run.checkpointer is not None:
            run.checkpointer.clear()  # the retry starts over from the base
    raise AssertionError("unreachable: the last attempt returns or raises")


def _train_loop(run: TrainingRun, cancel, interrupt) -> float:
    """Every epoch (from where a resumed run stopped); returns the seconds spent training."""
    config = run.config
    rng = random.Random(config.seed)
    run.train_started = time.monotonic()
    run.good = GoodState.of(run)
    for epoch in range(config.epochs):
        order = list(run.data.train_encoded)
        rng.shuffle(order)  # replayed for the epochs a resumed run skips, so the order is the same
        if epoch < run.state.epoch or run.state.step >= run.total_steps:
            continue
        _train_epoch(run, epoch, order, cancel, interrupt)
        _end_epoch(run, epoch)
        if run.state.step >= run.total_steps or run.state.stopped_early:
            break
    return time.monotonic() - run.train_started


def _run_fingerprint(config: TrainConfig, tweets: list[str]) -> str:
    recorded = {k: v for k, v in _recorded_config(config).items() if k != "device"}
    return fingerprint(recorded, tweets)


def _has_checkpoint_of(config: TrainConfig, tweets: list[str]) -> bool:
    if not config.checkpoint_dir:
        return False
    return stored_fingerprint(config.checkpoint_dir) == _run_fingerprint(config, tweets)


def _prepare_run(posts, config: TrainConfig, report, started: float) -> TrainingRun:
    """Model, data, optimizer and loop state (restored from a checkpoint when there is one)."""
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    amp_dtype = autocast_dtype(config.precision, device)
    model, tokenizer, data, config = _model_and_data(posts, config, device)
    if config.method == "lora" and amp_dtype is not None:
        frozen_weights_in(model, amp_dtype)
    model.train()
    total_steps = data.steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config),
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=fused_optimizer(device, params),
    )
    warmup = int(total_steps * config.warmup_fraction)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    # fp16 (CUDA without bf16) needs loss scaling or small gradients underflow to zero; bf16 and
    # fp32 do not, and a disabled scaler is a no-op.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    checkpointer = None
    if config.checkpoint_dir:
        checkpointer = Checkpointer(
            config.checkpoint_dir, config.checkpoint_seconds, _run_fingerprint(config, posts[0])
        )
    run = TrainingRun(
        config,
        device,
        amp_dtype,
        model,
        tokenizer,
        data,
        total_steps,
        params,
        optimizer,
        scheduler,
        scaler,
        checkpointer,
        LoopState(),
        report,
        started,
    )
    state = checkpointer.restore(model, optimizer, scheduler) if checkpointer else None
    if state is None:
        state = LoopState()
        state.initial_val = run.evaluate()
        if state.initial_val is not None:
            state.history.append({"step": 0, "val_loss": state.initial_val})
    run.state = state
    return run


def _model_and_data(posts, config: TrainConfig, device: torch.device):
    """The model to train (the base with new adapters, or what an update starts from) and its data."""
    tweets, held_out, watch = posts
    with MODEL_BUILD_LOCK:
        model, tokenizer = _starting_model(config, device)
        limit = position_limit(model.config) or config.block_size
        data = prepare_data(tokenizer, tweets, config, limit, held_out, watch)
        config = _fit_batch(config, data, device)
        if config.method == "lora" and config.start_from:
            model = continue_lora(model, config.start_from)
        elif config.method == "lora":
            limit = config.lora_token_rows
            model = wrap_lora(model, config, frequent_tokens(data.train_encoded, limit) if limit else None)
        if config.method == "lora" and config.fast_token_rows:
            fast_token_rows(model)
        if config.method == "lora" and config.fast_lora:
            fast_lora_layers(model)
    return model, tokenizer, data, config


def _starting_model(config: TrainConfig, device: torch.device):
    """The base, or for an update of a fully fine-tuned persona the persona itself (its folder is a
    whole model); a LoRA persona's adapters go on the base in `continue_lora`."""
    source = config.start_from if config.start_from and config.method == "full" else config.base_model
    return load_base_model(source, device, config.bases_dir, training_attention(device, config.block_size))


def _fit_batch(config: TrainConfig, data: TrainData, device: torch.device) -> TrainConfig:
    """On a GPU, the run's batch sized to it (the same number of epochs, fewer and larger steps)."""
    if not config.fit_batch_to_device:
        return config
    epochs = config.epochs
    fitted = fitted_batch_size(
        config.batch_size, data.rows_per_epoch, epochs, data.block_size, gpu_memory_bytes(device)
    )
    if fitted == config.batch_size:
        return config
    log.info("Batch of %s rows on %s (asked: %s)", fitted, device, config.batch_size)
    data.steps_per_epoch = max(1, math.ceil(data.rows_per_epoch / fitted))
    return replace(config, batch_size=fitted)


def _train_epoch(run: TrainingRun, epoch: int, order: list[list[int]], cancel, interrupt) -> None:
    """The steps of one epoch (from where a resumed run stopped), checkpointing when due."""
    cfg, state = run.config, run.state
    rows = run.data.arrange(order, run.data.block_size)
    batches = [rows[i : i + cfg.batch_size] for i in range(0, len(rows), cfg.batch_size)]
    for index in range(state.batch_in_epoch if epoch == state.epoch else 0, len(batches)):
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled()
        if interrupt is not None and interrupt.is_set():
            if run.checkpointer is not None and state.step > state.resumed_from:
                run.checkpointer.save(run.model, run.optimizer, run.scheduler, state)
            raise TrainingInterrupted()
        run.step_timer.start()
        batch = make_batch(batches[index], run.tokenizer.pad_token_id, run.device)
        value = train_step(run, batch)
        run.step_timer.stop()
        state.step += 1
        state.epoch, state.batch_in_epoch = epoch, index + 1
        state.tokens_seen += int(batch["attention_mask"].sum())
        smoothed = state.smoothed_loss
        state.smoothed_loss = value if smoothed is None else 0.9 * smoothed + 0.1 * value
        elapsed = time.monotonic() - run.train_started
        state.history.append(
            {"step": state.step, "train_loss": value, "tokens": state.tokens_seen, "time": round(elapsed, 4)}
        )
        guard_divergence(run)
        run.report(
            run.progress(
                "training",
                epoch=epoch + 1,
                elapsed=time.monotonic() - run.started,
                eta_seconds=run.step_timer.eta(run.total_steps - state.step),
            )
        )
        if state.step >= run.total_steps:
            break
        if run.checkpointer is not None and run.checkpointer.due():
            run.checkpointer.save(run.model, run.optimizer, run.scheduler, state)


def train_step(run: TrainingRun, batch: dict[str, torch.Tensor]) -> float:
    """One optimizer step on one batch; returns its loss."""
    with autocast(run.device, run.amp_dtype):
        loss = causal_lm_loss(run.model, batch, run.amp_dtype, run.config.chunked_loss)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
    torch.nn.utils.clip_grad_norm_(run.params, 1.0)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _end_epoch(run: TrainingRun, epoch: int) -> None:
    """Evaluate on the held-out tweets and remember the best epoch's weights."""
    state = run.state
    run.report(run.progress("evaluating", epoch=epoch + 1))
    val_loss = run.evaluate()
    if val_loss is not None:
        state.history.append({"step": state.step, "val_loss": val_loss, "epoch": epoch + 1})
        if state.best_val is None or val_loss < state.best_val:
            state.best_val, state.best_epoch = val_loss, epoch + 1
            last = epoch + 1 >= run.config.epochs or state.step >= run.total_steps
            # The last epoch's weights are the model's own: a copy is only kept for an earlier epoch
            # that may turn out best (it also goes into checkpoints, so a resumed run keeps it).
            state.best_weights = None if last or not run.config.keep_best else trainable_copy(run.model)
    state.epoch, state.batch_in_epoch = epoch + 1, 0
    _stop_when_no_better(run, epoch + 1)


def _stop_when_no_better(run: TrainingRun, done: int) -> None:
    """Early stopping: `patience` epochs in a row without a lower held-out loss end the run (the
    best epoch is kept as always); the epochs after it only made the persona worse."""
    state, config = run.state, run.config
    if (
        not config.patience
        or state.best_epoch is None
        or done >= config.epochs
        or state.step >= run.total_steps
    ):
        return
    if done - state.best_epoch >= config.patience:
        state.stopped_early = (
            f"stopped after epoch {done} of {config.epochs}: the held-out posts were fitted best after "
            f"epoch {state.best_epoch}, and {done - state.best_epoch} more did not do better"
        )
        log.info("Early stop: %s", state.stopped_early)


def _restore_best(run: TrainingRun) -> None:
    """With `keep_best`, put back the best epoch's weights when a later epoch did worse."""
    state = run.state
    if run.config.keep_best and state.best_weights is not None:
        run.model.load_state_dict(state.best_weights, strict=False)
        log.info("Kept epoch %s (validation loss %.4f), the best", state.best_epoch, state.best_val)


def save_result(run: TrainingRun, output_dir: Path, train_seconds: float) -> TrainResult:
    """Save the model, tokenizer and training.json; the metrics of the kept weights."""
    config = run.config
    output_dir.mkdir(parents=True, exist_ok=True)
    if config.method == "lora":
        # Adapters are stored in bf16: half the bytes on disk (a GPT-2 persona at rank 16 is ~4.7 MB
        # of weights instead of 9.4 MB); rounding a small low-rank delta to bf16 does not move the
        # validation loss measurably (tests/test_training.py checks it). Trained token rows
        # (lora_token_rows) go to bf16 too, as the base's own weights would. Trained layer norms and
        # biases are whole weights, not deltas, and few: they stay fp32.
        for name, parameter in run.model.named_parameters():
            if parameter.requires_grad and ("lora_" in name or "trainable_tokens_" in name):
                parameter.data = parameter.data.to(torch.bfloat16)
    run.model.save_pretrained(output_dir)
    run.tokenizer.save_pretrained(output_dir)
    metrics = _metrics(run, train_seconds)
    config_dict = _recorded_config(config) | {
        "learning_rate": config.lr,
        "token_rows_learning_rate": config.token_rows_lr,
        "block_size": run.data.block_size,
    }
    info = {"config": config_dict, "metrics": metrics, "history": run.state.history}
    (output_dir / TRAINING_INFO_FILE).write_text(json.dumps(info, indent=1))
    log.info(
        "Trained %s steps in %.1fs: val loss %s -> %s (epoch %s kept)",
        run.state.step,
        train_seconds,
        run.state.initial_val,
        metrics["val_loss"],
        metrics["best_epoch"],
    )
    return TrainResult(
        output_dir=output_dir,
        metrics=metrics,
        history=run.state.history,
        config=config_dict,
        train_posts=run.data.train_tweets,
        held_out_posts=run.data.val_tweets,
    )


def _last_val(run: TrainingRun) -> float | None:
    history = run.state.history
    return history[-1].get("val_loss") if history and "val_loss" in history[-1] else None


def _kept_val(run: TrainingRun) -> float | None:
    """The validation loss of the weights that would be saved (the best epoch's with keep_best)."""
    state = run.state
    return state.best_val if run.config.keep_best and state.best_val is not None else _last_val(run)


def _metrics(run: TrainingRun, train_seconds: float) -> dict[str, Any]:
    state, history = run.state, run.state.history
    last_val = _last_val(run)
    kept_val = _kept_val(run)
    kept_epoch = state.best_epoch if kept_val is not None and kept_val == state.best_val else None
    return {
        "train_loss": state.smoothed_loss,
        "initial_val_loss": state.initial_val,
        "initial_val_perplexity": _perplexity(state.initial_val),
        "val_loss": kept_val,  # of the weights saved: the best epoch's with keep_best
        "val_perplexity": _perplexity(kept_val),
        "best_epoch": kept_epoch,
        "last_val_loss": last_val,
        "last_val_perplexity": _perplexity(last_val),
        "steps": state.step,
        "epochs": run.config.epochs,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "old_held_out_loss": state.watch_val,  # an update's old posts, kept weights
        "train_tweets": len(run.data.train_tweets),
        "val_tweets": len(run.data.val_tweets),
        "train_tokens": state.tokens_seen,
        "train_seconds": round(train_seconds, 2),
        # This run's own speed: a resumed run counts only the steps it trained itself.
        "tokens_per_second": round(_tokens_since(history, state.resumed_from) / train_seconds, 1)
        if train_seconds > 0
        else None,
        "resumed_from_step": state.resumed_from or None,
        "device": run.device.type,
        "precision": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "fp32",
        "learning_rate": run.config.lr,
        "rollbacks": state.rollbacks,  # by the divergence guard
        "max_loss_climb": state.max_climb,  # the smoothed training loss's highest rise over its start
        "note": state.note,
    }


def _perplexity(loss: float | None) -> float | None:
    return math.exp(loss) if loss is not None else None
