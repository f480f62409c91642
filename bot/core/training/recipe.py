"""What one training is asked to do: `TrainConfig` (every hyper-parameter, with the measured defaults),
what it reports while it runs (`TrainProgress`) and what it returns (`TrainResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class TrainingCancelled(Exception):
    pass


class TrainingInterrupted(TrainingCancelled):
    """Stopped for a shutdown: the job is to resume from the checkpoint saved on the way out."""


# The retry of a run that did not beat the base uses this share of its learning rate.
RETRY_LR_FACTOR = 0.25


# A run beats the base when its held-out loss is lower by at least this (0.1% in perplexity): weights
# that barely moved are not a persona.
MIN_IMPROVEMENT = 1e-3


# LoRA personas of at least this many posts train 2 epochs by default, fewer posts 4.
MANY_POSTS = 1000


def default_epochs(method: str, posts: int) -> int:
    """Passes over `posts` posts when none are asked for. On the real base (docs/quality.md) LoRA at
    1e-3 over 4 epochs was best after epoch 2: 2 epochs whose schedule ends there, at twice the
    rates, fit as well (+0.1% and +0.6% perplexity on 2,109 and 1,357 posts) in two thirds of the
    time; on 400 posts 2 epochs were 3.4% worse and 4 at the new rates 1.2%. A full fine-tune at
    2e-4 over 2 epochs was 6% worse than over 4 (best after epoch 2; early stopping ends it after 3)."""
    return 2 if method == "lora" and posts >= MANY_POSTS else 4


@dataclass
class TrainConfig:
    base_model: str = "gpt2"
    method: str = "lora"  # lora | full
    epochs: int | None = None  # None: default_epochs(method, number of posts), chosen by train()
    batch_size: int = 8
    block_size: int = 128
    learning_rate: float | None = None  # default depends on the method
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    # Defaults measured by bench/quality.py (docs/quality.md): rank-stabilised LoRA at rank 16 came
    # closest to a full fine-tune of the LoRA-family variants, at ~4.7 MB per GPT-2 persona.
    lora_rank: int = 16
    lora_alpha: int = 16  # with rsLoRA the scale alpha/sqrt(r) = 4 stays right whatever the rank
    # No dropout on the adapters' input: on CPU its random masks were a fifth of a LoRA step, and on
    # the real base (docs/performance.md) held-out perplexity was the same without it (49.79 vs
    # 49.73) at 1.41x the tokens per second.
    lora_dropout: float = 0.0
    # Also train the layer norms and biases (~1% better in the bench). Off: peft trains the *base*
    # model's biases, which personas sharing one base in generation would overwrite for each other.
    lora_train_norms: bool = False
    use_rslora: bool = True  # rank-stabilised scaling alpha/sqrt(r) instead of alpha/r
    use_dora: bool = False  # weight-decomposed LoRA (a magnitude vector per adapted layer)
    # Also train the embedding rows (tied to the output layer in GPT-2) of up to this many of the
    # tokens most frequent in the person's training tweets (peft's trainable_token_indices): a token
    # frequency shift that low-rank updates cannot express. 0: off. On every proxy in docs/quality.md
    # they did more for the fit than the adapters' rate, at ~6.3 MB per GPT-2 persona; generation
    # applies the rows per persona (fastdecode's per-row token rows, or a batch of its own on peft).
    lora_token_rows: int = 1000
    # The token rows' own learning rate (an optimizer group of their own, no weight decay): they are
    # raw embedding rows, updated directly, not a low-rank delta scaled by alpha/sqrt(r). None: the
    # measured default below.
    token_rows_learning_rate: float | None = None
    # Divergence guard: when the smoothed training loss climbs this many nats above its first value,
    # the run rolls back to its last good state and halves the learning rate, at most max_rollbacks
    # times (docs/quality.md: healthy runs stay well below the margin).
    divergence_margin: float = 1.0
    max_rollbacks: int = 2
    keep_best: bool = True  # save the epoch with the lowest validation loss, not just the last one
    # Stop after this many epochs without a lower held-out loss (0: run every epoch). Measured on the
    # real base (docs/quality.md): every 4-epoch run at 1e-3 / 2e-4 was best after epoch 2. With the
    # default 2 epochs it never triggers; it saves the epochs of a longer TRAIN_EPOCHS.
    patience: int = 1
    fit_batch_to_device: bool = True  # on CUDA, grow batch_size to fill the GPU (devices.fitted_batch_size)
    seed: int = 42
    val_fraction: float = 0.1
    max_steps: int = 0  # 0 = run all epochs
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    pack: bool = True  # False: one tweet per row, padded to the batch's longest (the baseline in bench/)
    fast_token_rows: bool = True  # False: peft's own token-rows forward (adapters.py; the baseline in bench/)
    fast_lora: bool = True  # False: peft's own LoRA layers' forward (adapters.fast_lora_layers; bench/)
    chunked_loss: bool = True  # False: the library's loss on the whole logits (headloss.py; bench/)
    checkpoint_dir: str | None = None  # where to keep a resumable checkpoint (None: no checkpoints)
    checkpoint_seconds: float = 300.0  # least time between two checkpoints
    # Where a GGUF base is dequantized once (MODELS_DIR/.bases in the bot; bases.py).
    bases_dir: str | None = None
    # An update: the persona folder whose weights (adapters and token rows, or the whole model)
    # training starts from instead of the base's; that version is then the one to beat.
    start_from: str | None = None

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        # docs/quality.md: at GPT-2-124M's shapes a full fine-tune was best at the published 2e-4
        # (1e-3 was 27% worse). LoRA adapters: 2e-3 over 2 epochs on the real SmolLM2-135M fitted as
        # well as 1e-3 over 4 (whose best was epoch 2); 3e-3 no better, 1.5e-3 3% worse. The token
        # rows have their own rate (token_rows_lr).
        return 2e-3 if self.method == "lora" else 2e-4

    @property
    def token_rows_lr(self) -> float:
        if self.token_rows_learning_rate is not None:
            return self.token_rows_learning_rate
        # Raw embedding (and tied output) rows: at 5e-3 they made GPT-2-shaped personas worse than
        # their base; 2e-4 was best over 4 epochs on the real base, 4e-4 over 2 (2e-4 there: 2% worse).
        return 4e-4


@dataclass
class TrainProgress:
    phase: str  # loading | training | evaluating | saving
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    loss: float | None = None
    elapsed: float = 0.0
    eta_seconds: float | None = None
    note: str | None = None  # what the run did by itself (a roll-back, a retry), shown with the progress
    may_end_early: bool = False  # early stopping is on: total_steps and the ETA are the most it takes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)  # per step train loss, per eval val loss
    config: dict[str, Any] = field(default_factory=dict)
    # The split the run made: what the voice report compares the persona with.
    train_posts: list[str] = field(default_factory=list, repr=False)
    held_out_posts: list[str] = field(default_factory=list, repr=False)
