"""Fine-tune a GPT-2 style model on one person's tweets (huggingtweets' recipe, LoRA by default).

The recipe, as huggingtweets did it: every tweet is wrapped as `<|endoftext|>tweet<|endoftext|>`,
the tweets are shuffled each pass (4 passes by default), concatenated and cut into blocks
(packing, as `run_clm.py` does, so no compute is spent on padding), and trained with AdamW and a
cosine schedule. 10% of the tweets are held out to report validation loss and perplexity.

`train()` is synchronous and meant to run in a worker thread: it reports progress through a
callback (called from that thread) and checks a `threading.Event` between steps to cancel.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import Checkpointer, LoopState, fingerprint
from .devices import MODEL_BUILD_LOCK, autocast, autocast_dtype, pick_device
from .progress import StepTimer

log = logging.getLogger(__name__)

# Where an architecture's own names are known, LoRA targets them (GPT-2's Conv1D layers: personas
# trained before keep loading); any other causal LM gets peft's "all-linear" (every linear layer
# of its blocks, not the output head).
LORA_TARGET_MODULES = {"gpt2": ["c_attn", "c_proj", "c_fc"]}
TRAINING_INFO_FILE = "training.json"


class TrainingCancelled(Exception):
    pass


class TrainingInterrupted(TrainingCancelled):
    """Stopped for a shutdown: the job is to resume from the checkpoint saved on the way out."""


class TrainingError(RuntimeError):
    """Training could not run (the base model cannot be loaded, no data...)."""


@dataclass
class TrainConfig:
    base_model: str = "gpt2"
    method: str = "lora"  # lora | full
    epochs: int = 4
    batch_size: int = 8
    block_size: int = 128
    learning_rate: float | None = None  # default depends on the method
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    seed: int = 42
    val_fraction: float = 0.1
    max_steps: int = 0  # 0 = run all epochs
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    pack: bool = True  # False: one tweet per row, padded to the batch's longest (the baseline in bench/)
    checkpoint_dir: str | None = None  # where to keep a resumable checkpoint (None: no checkpoints)
    checkpoint_seconds: float = 300.0  # least time between two checkpoints

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-4 if self.method == "lora" else 5e-5


@dataclass
class TrainProgress:
    phase: str  # loading | training | evaluating | saving
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    loss: float | None = None
    elapsed: float = 0.0
    eta_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)  # per step train loss, per eval val loss
    config: dict[str, Any] = field(default_factory=dict)


def split_tweets(tweets: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    order = list(tweets)
    random.Random(seed).shuffle(order)
    n_val = max(1, int(round(len(order) * val_fraction))) if len(order) >= 10 else 0
    return order[n_val:], order[:n_val]


def encode_tweets(tokenizer, tweets: list[str]) -> list[list[int]]:
    """Token ids of `<|endoftext|>tweet<|endoftext|>` for each tweet."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer(tweets, add_special_tokens=False)["input_ids"]
    return [[eos, *ids, eos] for ids in encoded]


def pack_blocks(sequences: list[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate sequences and cut them into blocks of block_size (the last one may be short)."""
    flat = [token for seq in sequences for token in seq]
    return [flat[i : i + block_size] for i in range(0, len(flat), block_size)]


def pad_rows(sequences: list[list[int]], block_size: int) -> list[list[int]]:
    """One sequence per row, truncated to block_size (the baseline without packing)."""
    return [seq[:block_size] for seq in sequences]


def make_batch(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    return {
        "input_ids": input_ids.to(device),
        "labels": labels.to(device),
        "attention_mask": attention.to(device),
    }


def load_base_model(base_model: str, device: torch.device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        model = AutoModelForCausalLM.from_pretrained(base_model)
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"Could not load the base model {base_model!r}: it must be a Hugging Face hub id "
            f"reachable from this machine or a local model folder ({exc.__class__.__name__})."
        ) from exc
    if tokenizer.eos_token_id is None and isinstance(getattr(model.config, "eos_token_id", None), int):
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(model.config.eos_token_id)
    if tokenizer.eos_token_id is None:
        raise TrainingError(f"The base model {base_model!r} has no end-of-text token.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def lora_targets(model) -> tuple[list[str] | str, bool]:
    """LoRA target modules for this model's architecture, and whether they store weights transposed."""
    from transformers.pytorch_utils import Conv1D

    targets = LORA_TARGET_MODULES.get(getattr(model.config, "model_type", ""), "all-linear")
    fan_in_fan_out = any(isinstance(module, Conv1D) for module in model.modules())  # GPT-2 style layers
    return targets, fan_in_fan_out


def position_limit(model_config, default: int) -> int:
    """The most positions the model can attend to (GPT-2: n_positions, others: max_position_embeddings)."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def wrap_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    targets, fan_in_fan_out = lora_targets(model)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,  # GPT-2's Conv1D stores its weight transposed
    )
    return get_peft_model(model, lora)


@torch.no_grad()
def evaluate(model, blocks: list[list[int]], batch_size: int, pad_id: int, device, amp_dtype) -> float | None:
    """Mean loss per predicted token over the validation blocks."""
    if not blocks:
        return None
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        rows = blocks[i : i + batch_size]
        batch = make_batch(rows, pad_id, device)
        with autocast(device, amp_dtype):
            loss = model(**batch).loss
        tokens = sum(len(row) - 1 for row in rows)
        total_loss += float(loss) * tokens
        total_tokens += tokens
    model.train()
    return total_loss / max(1, total_tokens)


def _recorded_config(config: TrainConfig) -> dict[str, Any]:
    """The hyper-parameters of a run (where its checkpoints are kept is not one)."""
    return {k: v for k, v in asdict(config).items() if not k.startswith("checkpoint_")}


def _tokens_since(history: list[dict[str, Any]], step: int) -> int:
    """Training tokens seen after `step` (a resumed run's own share)."""
    counts = [(h["step"], h["tokens"]) for h in history if "tokens" in h]
    if not counts:
        return 0
    return counts[-1][1] - max((tokens for s, tokens in counts if s <= step), default=0)


def train(
    tweets: list[str],
    output_dir: str | Path,
    config: TrainConfig,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
    interrupt: threading.Event | None = None,
) -> TrainResult:
    """Fine-tune `config.base_model` on `tweets` and save model + tokenizer in `output_dir`.

    Between steps, `cancel` stops the run for good; `interrupt` (a shutdown) stops it after
    saving a checkpoint, so the job resumes where it was at the next start.
    """
    from transformers import get_cosine_schedule_with_warmup

    if len(tweets) < 2:
        raise TrainingError("At least two tweets are needed to train.")
    report = progress or (lambda p: None)
    started = time.monotonic()
    report(TrainProgress(phase="loading"))

    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    amp_dtype = autocast_dtype(config.precision, device)
    if config.method not in ("lora", "full"):
        raise TrainingError(f"Unknown training method {config.method!r} (use lora or full).")
    with MODEL_BUILD_LOCK:
        model, tokenizer = load_base_model(config.base_model, device)
        if config.method == "lora":
            model = wrap_lora(model, config)
    block_size = min(config.block_size, position_limit(model.config, config.block_size))
    model.train()

    train_tweets, val_tweets = split_tweets(tweets, config.val_fraction, config.seed)
    val_encoded = encode_tweets(tokenizer, val_tweets)
    val_blocks = pack_blocks(val_encoded, block_size)
    arrange = pack_blocks if config.pack else pad_rows
    train_encoded = encode_tweets(tokenizer, train_tweets)
    rows_per_epoch = len(arrange(train_encoded, block_size))
    steps_per_epoch = max(1, math.ceil(rows_per_epoch / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(total_steps * config.warmup_fraction), total_steps
    )
    pad_id = tokenizer.pad_token_id

    checkpointer = None
    state = None
    if config.checkpoint_dir:
        run = {k: v for k, v in _recorded_config(config).items() if k != "device"}
        checkpointer = Checkpointer(config.checkpoint_dir, config.checkpoint_seconds, fingerprint(run, tweets))
        state = checkpointer.restore(model, optimizer, scheduler)
    if state is None:
        state = LoopState()
        state.initial_val = evaluate(model, val_blocks, config.batch_size, pad_id, device, amp_dtype)
        if state.initial_val is not None:
            state.history.append({"step": 0, "val_loss": state.initial_val})
    history = state.history

    rng = random.Random(config.seed)
    train_started = time.monotonic()
    step_timer = StepTimer()
    for epoch in range(config.epochs):
        order = list(train_encoded)
        rng.shuffle(order)  # replayed for the epochs a resumed run skips, so the order is the same
        if epoch < state.epoch or state.step >= total_steps:
            continue
        rows = arrange(order, block_size)
        batches = [rows[i : i + config.batch_size] for i in range(0, len(rows), config.batch_size)]
        for index in range(state.batch_in_epoch if epoch == state.epoch else 0, len(batches)):
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled()
            if interrupt is not None and interrupt.is_set():
                if checkpointer is not None and state.step > state.resumed_from:
                    checkpointer.save(model, optimizer, scheduler, state)
                raise TrainingInterrupted()
            step_timer.start()
            batch = make_batch(batches[index], pad_id, device)
            with autocast(device, amp_dtype):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_timer.stop()
            state.step += 1
            state.epoch, state.batch_in_epoch = epoch, index + 1
            state.tokens_seen += int(batch["attention_mask"].sum())
            value = float(loss.detach())
            state.smoothed_loss = value if state.smoothed_loss is None else 0.9 * state.smoothed_loss + 0.1 * value
            elapsed = time.monotonic() - train_started
            history.append({"step": state.step, "train_loss": value, "tokens": state.tokens_seen, "time": round(elapsed, 4)})
            report(
                TrainProgress(
                    phase="training", step=state.step, total_steps=total_steps, epoch=epoch + 1,
                    loss=state.smoothed_loss, elapsed=time.monotonic() - started,
                    eta_seconds=step_timer.eta(total_steps - state.step),
                )
            )
            if state.step >= total_steps:
                break
            if checkpointer is not None and checkpointer.due():
                checkpointer.save(model, optimizer, scheduler, state)
        report(TrainProgress(phase="evaluating", step=state.step, total_steps=total_steps, epoch=epoch + 1,
                             loss=state.smoothed_loss))
        val_loss = evaluate(model, val_blocks, config.batch_size, pad_id, device, amp_dtype)
        if val_loss is not None:
            history.append({"step": state.step, "val_loss": val_loss})
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        if state.step >= total_steps:
            break

    train_seconds = time.monotonic() - train_started
    step, smoothed, tokens_seen, initial_val = state.step, state.smoothed_loss, state.tokens_seen, state.initial_val
    report(TrainProgress(phase="saving", step=step, total_steps=total_steps, loss=smoothed))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if config.method == "lora":
        # Adapters are stored in bf16: half the bytes on disk (a GPT-2 persona is ~2.4 MB of
        # weights instead of 4.7 MB); rounding a small low-rank delta to bf16 does not move the
        # validation loss measurably (tests/test_training.py checks it).
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.to(torch.bfloat16)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)

    final_val = history[-1].get("val_loss") if history and "val_loss" in history[-1] else None
    metrics: dict[str, Any] = {
        "train_loss": smoothed,
        "initial_val_loss": initial_val,
        "val_loss": final_val,
        "val_perplexity": math.exp(final_val) if final_val is not None else None,
        "steps": step,
        "epochs": config.epochs,
        "train_tweets": len(train_tweets),
        "val_tweets": len(val_tweets),
        "train_tokens": tokens_seen,
        "train_seconds": round(train_seconds, 2),
        # This run's own speed: a resumed run counts only the steps it trained itself.
        "tokens_per_second": round(_tokens_since(history, state.resumed_from) / train_seconds, 1)
        if train_seconds > 0 else None,
        "resumed_from_step": state.resumed_from or None,
        "device": device.type,
        "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
    }
    config_dict = _recorded_config(config) | {"learning_rate": config.lr, "block_size": block_size}
    info = {"config": config_dict, "metrics": metrics, "history": history}
    (output_dir / TRAINING_INFO_FILE).write_text(json.dumps(info, indent=1))
    log.info("Trained %s steps in %.1fs: val loss %s -> %s", step, train_seconds, initial_val, final_val)
    return TrainResult(output_dir=output_dir, metrics=metrics, history=history, config=config_dict)
