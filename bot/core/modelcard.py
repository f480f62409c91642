"""Model cards in the huggingtweets layout, so a trained folder can be pushed to the hub as is.

`render_card` writes README.md for a trained persona through `huggingface_hub.ModelCard` (the
front matter is `ModelCardData`, serialised by the library); `parse_card` reads the display name
and the data table back from a card (ours or an original huggingtweets one) for hub imports.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .ingest import STAT_ROWS, data_table


@dataclass
class CardInfo:
    display_name: str | None = None
    stats: dict[str, int] = field(default_factory=dict)
    base_model: str | None = None


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
) -> str:
    data = ModelCardData(
        language="en",
        tags=["huggingtweets", "tweetalike", "text-generation"],
        widget=[{"text": "My dream is"}],
        base_model=base_model,
    )
    name = html.escape(display_name)
    body = "\n\n".join(
        [
            _header(name, handle, avatar_url),
            _how_it_works(name, base_model),
            f"## Training data\n\nThe model was trained on tweets from {name}.\n\n{data_table(stats, name)}",
            _procedure(handle, base_model, method, config, metrics),
            _usage(handle, method),
            "## Limitations and bias\n\nThe model suffers from [the same limitations and bias as GPT-2]"
            "(https://huggingface.co/gpt2#limitations-and-bias).\n\n"
            "In addition, the data present in the user's tweets further affects the text generated "
            "by the model.\n",
        ]
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _header(name: str, handle: str, avatar_url: str | None) -> str:
    avatar = (
        f'<div style="display:inline-block; width:96px; height:96px; border-radius:50%; '
        f"background-size:cover; background-image:url('{html.escape(avatar_url)}')\"></div>\n"
        if avatar_url
        else ""
    )
    bot_label = '<div style="text-align: center; margin-top: 3px; font-size: 16px; font-weight: 800">'
    return f"""<div class="inline-flex flex-col" style="line-height: 1.5;">
{avatar}{bot_label}🤖 AI BOT 🤖</div>
<div style="text-align: center; font-size: 16px; font-weight: 800">{name}</div>
<div style="text-align: center; font-size: 14px;">@{handle}</div>
</div>

I was made with tweetalike, in the spirit of [huggingtweets](https://github.com/borisdayma/huggingtweets)."""


def _how_it_works(name: str, base_model: str) -> str:
    return (
        f"## How does it work?\n\nThe model is a pre-trained "
        f"[GPT-2](https://huggingface.co/{base_model}) fine-tuned on {name}'s tweets.\n"
        f"Every post it writes is generated: it is not {name}."
    )


def _procedure(
    handle: str, base_model: str, method: str, config: dict[str, Any], metrics: dict[str, Any]
) -> str:
    kept = " and the best epoch is the one saved" if config.get("keep_best", True) else ""
    return f"""## Training procedure

The model is based on a pre-trained [GPT-2](https://huggingface.co/{base_model}) which is fine-tuned
on @{handle}'s tweets. Each tweet is wrapped as `<|endoftext|>tweet<|endoftext|>`; tweets are
shuffled every pass and packed into blocks. 10% of the tweets are held out for validation: they are
never trained on, and the perplexity below is measured on them. After each epoch the model is
evaluated on them{kept}.

{_two_columns("Hyper-parameter", hyper_parameters(method, config))}

{_two_columns("Metric", metric_rows(metrics))}"""


def hyper_parameters(method: str, config: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("method", "LoRA adapters (peft)" if method == "lora" else "full fine-tuning"),
        ("epochs", config.get("epochs")),
        ("learning rate", config.get("learning_rate")),
        ("batch size", config.get("batch_size")),
        ("block size (tokens)", config.get("block_size")),
        ("schedule", "cosine with warm-up"),
        ("seed", config.get("seed")),
    ]
    if method == "lora":
        rows += [("LoRA rank", config.get("lora_rank")), ("LoRA alpha", config.get("lora_alpha"))]
        if config.get("lora_train_norms"):
            rows.append(("also trained", "layer norms and biases"))
    return rows


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    """Held-out loss and perplexity before and after training, and which epoch was kept."""
    before, after = metrics.get("initial_val_loss"), metrics.get("val_loss")
    rows = [
        ("held-out perplexity before training", _fmt(_ppl(before), 2)),
        ("held-out perplexity after training", _fmt(metrics.get("val_perplexity") or _ppl(after), 2)),
        ("held-out loss before → after", f"{_fmt(before, 4)} → {_fmt(after, 4)}"),
    ]
    if metrics.get("best_epoch") is not None:
        kept = f"{metrics['best_epoch']} of {metrics.get('epochs', '?')}"
        rows.append(("epoch kept (lowest held-out loss)", kept))
    rows += [("steps", metrics.get("steps")), ("training tokens", metrics.get("train_tokens"))]
    return rows


def _two_columns(title: str, rows: list[tuple[str, Any]]) -> str:
    return "\n".join([f"| {title} | Value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)])


def _ppl(loss: float | None) -> float | None:
    import math

    return math.exp(loss) if loss is not None else None


def _fmt(value: float | None, digits: int) -> str:
    return f"{value:.{digits}f}" if value is not None else "n/a"


def _usage(handle: str, method: str) -> str:
    peft_note = (
        "\nThis folder holds LoRA adapters for the base model; `pipeline` loads them when `peft` "
        "is installed.\n"
        if method == "lora"
        else ""
    )
    return f"""## How to use

You can use this model directly with a pipeline for text generation:

```python
from transformers import pipeline
generator = pipeline('text-generation',
                     model='{handle}  # this folder')
generator("My dream is", num_return_sequences=5)
```
{peft_note}"""


_NAME_RE = re.compile(r'<div style="text-align: center; font-size: 16px; font-weight: 800">(.+?)</div>')


def parse_card(text: str) -> CardInfo:
    """Read what a huggingtweets-style card says about its person and data (missing parts stay None)."""
    info = CardInfo()
    name = _NAME_RE.search(text)
    if name:
        info.display_name = html.unescape(re.sub(r"<[^>]+>", "", name.group(1))).strip() or None
    base = None
    if text.startswith("---"):
        try:
            base = ModelCard(text, ignore_metadata_errors=True).data.base_model
        except ValueError:  # broken front matter: the rest of the card still counts
            pass
    info.base_model = base if isinstance(base, str) else None
    for key, label in STAT_ROWS:
        row = re.search(rf"^\|\s*{re.escape(label)}\s*\|\s*([\d,]+)\s*\|", text, re.MULTILINE)
        if row:
            info.stats[key] = int(row.group(1).replace(",", ""))
    return info
