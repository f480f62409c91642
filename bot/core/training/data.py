"""The training data, prepared once: the held-out split, every tweet wrapped in end-of-text tokens,
packed into blocks (as `run_clm.py` does) or padded, and the batches the loop steps through."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bot.core.training.recipe import TrainConfig


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


def frequent_tokens(sequences: list[list[int]], limit: int) -> list[int]:
    """Up to `limit` token ids, most frequent first, of those that occur in `sequences`."""
    from collections import Counter

    counts = Counter(token for seq in sequences for token in seq)
    return sorted(token for token, _ in counts.most_common(limit))


@dataclass
class TrainData:
    train_tweets: list[str]
    val_tweets: list[str]
    train_encoded: list[list[int]]  # one token list per tweet, shuffled and arranged each epoch
    val_blocks: list[list[int]]
    block_size: int
    steps_per_epoch: int
    arrange: Callable[[list[list[int]], int], list[list[int]]]  # packing, or one tweet per row
    rows_per_epoch: int = 0
    watch_blocks: list[list[int]] | None = None  # an update's old held-out posts (forgetting)


def prepare_data(
    tokenizer,
    tweets: list[str],
    config: TrainConfig,
    max_positions: int,
    held_out: list[str] | None = None,
    watch: list[str] | None = None,
) -> TrainData:
    """Hold out the validation tweets (or take those given), tokenize, and work out the blocks and
    steps per epoch."""
    block_size = min(config.block_size, max_positions)
    if held_out is None:
        train_tweets, val_tweets = split_tweets(tweets, config.val_fraction, config.seed)
    else:
        train_tweets, val_tweets = list(tweets), list(held_out)
    val_blocks = pack_blocks(encode_tweets(tokenizer, val_tweets), block_size)
    arrange = pack_blocks if config.pack else pad_rows
    train_encoded = encode_tweets(tokenizer, train_tweets)
    rows_per_epoch = len(arrange(train_encoded, block_size))
    steps_per_epoch = max(1, math.ceil(rows_per_epoch / config.batch_size))
    return TrainData(
        train_tweets,
        val_tweets,
        train_encoded,
        val_blocks,
        block_size,
        steps_per_epoch,
        arrange,
        rows_per_epoch,
        pack_blocks(encode_tweets(tokenizer, watch), block_size) if watch else None,
    )
