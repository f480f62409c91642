"""Model cards in the huggingtweets layout, so a trained folder can be pushed to the hub as is.

`render_card` writes README.md for a trained persona; `parse_card` reads the display name and
the data table back from a card (ours or an original huggingtweets one) for hub imports.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

STAT_ROWS = [
    ("downloaded", "Tweets downloaded"),
    ("retweets", "Retweets"),
    ("short", "Short tweets"),
    ("duplicates", "Duplicates"),
    ("kept", "Tweets kept"),
]


@dataclass
class CardInfo:
    display_name: str | None = None
    handle: str | None = None
    stats: dict[str, int] = field(default_factory=dict)
    base_model: str | None = None


def data_table(name: str, stats: dict[str, Any]) -> str:
    """One column per person: a multi-person model keeps each one's figures in stats["people"]."""
    people = stats.get("people") or [dict(stats, name=name)]
    lines = ["| Data | " + " | ".join(p.get("name", "?") for p in people) + " |",
             "| --- |" + " --- |" * len(people)]
    lines += [f"| {label} | " + " | ".join(str(p.get(key, "")) for p in people) + " |"
              for key, label in STAT_ROWS if any(key in p for p in people)]
    return "\n".join(lines)


def render_card(
    *,
    handle: str,
    display_name: str,
    base_model: str,
    method: str,
    stats: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any],
    avatar_url: str | None = None,
    repo_id: str | None = None,
) -> str:
    repo = repo_id or f"./{handle}"
    name = html.escape(display_name)
    avatar = (
        f'<div style="display:inline-block; width:96px; height:96px; border-radius:50%; '
        f"background-size:cover; background-image:url('{html.escape(avatar_url)}')\"></div>\n"
        if avatar_url else ""
    )
    val_loss = metrics.get("val_loss")
    ppl = metrics.get("val_perplexity")
    hyper = [
        ("method", "LoRA adapters (peft)" if method == "lora" else "full fine-tuning"),
        ("epochs", config.get("epochs")),
        ("learning rate", config.get("learning_rate")),
        ("batch size", config.get("batch_size")),
        ("block size (tokens)", config.get("block_size")),
        ("schedule", "cosine with warm-up"),
        ("seed", config.get("seed")),
    ]
    if method == "lora":
        hyper += [("LoRA rank", config.get("lora_rank")), ("LoRA alpha", config.get("lora_alpha"))]
    hyper_table = "\n".join(f"| {k} | {v} |" for k, v in hyper)
    metric_rows = [
        ("validation loss", f"{val_loss:.4f}" if val_loss is not None else "n/a"),
        ("validation perplexity", f"{ppl:.2f}" if ppl is not None else "n/a"),
        ("validation loss before training", f"{metrics['initial_val_loss']:.4f}" if metrics.get("initial_val_loss") is not None else "n/a"),
        ("steps", metrics.get("steps")),
        ("training tokens", metrics.get("train_tokens")),
    ]
    metric_table = "\n".join(f"| {k} | {v} |" for k, v in metric_rows)
    usage_model = repo if repo_id else f"{handle}  # this folder"
    peft_note = (
        "\nThis folder holds LoRA adapters for the base model; `pipeline` loads them when `peft` is installed.\n"
        if method == "lora" else ""
    )
    return f"""---
language: en
tags:
- huggingtweets
- tweetalike
- text-generation
widget:
- text: "My dream is"
base_model: {base_model}
---

<div class="inline-flex flex-col" style="line-height: 1.5;">
{avatar}<div style="text-align: center; margin-top: 3px; font-size: 16px; font-weight: 800">🤖 AI BOT 🤖</div>
<div style="text-align: center; font-size: 16px; font-weight: 800">{name}</div>
<div style="text-align: center; font-size: 14px;">@{handle}</div>
</div>

I was made with tweetalike, in the spirit of [huggingtweets](https://github.com/borisdayma/huggingtweets).

## How does it work?

The model is a pre-trained [GPT-2](https://huggingface.co/{base_model}) fine-tuned on {name}'s tweets.
Every post it writes is generated: it is not {name}.

## Training data

The model was trained on tweets from {name}.

{data_table(name, stats)}

## Training procedure

The model is based on a pre-trained [GPT-2](https://huggingface.co/{base_model}) which is fine-tuned on @{handle}'s tweets.
Each tweet is wrapped as `<|endoftext|>tweet<|endoftext|>`; tweets are shuffled every pass and packed into blocks.
10% of the tweets are held out for validation.

| Hyper-parameter | Value |
| --- | --- |
{hyper_table}

| Metric | Value |
| --- | --- |
{metric_table}

## How to use

You can use this model directly with a pipeline for text generation:

```python
from transformers import pipeline
generator = pipeline('text-generation',
                     model='{usage_model}')
generator("My dream is", num_return_sequences=5)
```
{peft_note}
## Limitations and bias

The model suffers from [the same limitations and bias as GPT-2](https://huggingface.co/gpt2#limitations-and-bias).

In addition, the data present in the user's tweets further affects the text generated by the model.
"""


_NAME_RE = re.compile(r'<div style="text-align: center; font-size: 16px; font-weight: 800">(.+?)</div>')
_HANDLE_RE = re.compile(r'<div style="text-align: center; font-size: 14px;">@([A-Za-z0-9_-]+)</div>')
_BASE_RE = re.compile(r"^base_model:\s*(\S+)\s*$", re.MULTILINE)


def parse_card(text: str) -> CardInfo:
    """Read what a huggingtweets-style card says about its person and data (missing parts stay None)."""
    info = CardInfo()
    name = _NAME_RE.search(text)
    if name:
        info.display_name = html.unescape(re.sub(r"<[^>]+>", "", name.group(1))).strip() or None
    handle = _HANDLE_RE.search(text)
    if handle:
        info.handle = handle.group(1)
    base = _BASE_RE.search(text)
    if base:
        info.base_model = base.group(1)
    for key, label in STAT_ROWS:
        row = re.search(rf"^\|\s*{re.escape(label)}\s*\|\s*([\d,]+)\s*\|", text, re.MULTILINE)
        if row:
            info.stats[key] = int(row.group(1).replace(",", ""))
    return info
