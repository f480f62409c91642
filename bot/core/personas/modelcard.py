"""Model cards in the huggingtweets layout, so a trained folder can be pushed to the hub as is.

`render_card` writes README.md for a trained persona through `huggingface_hub.ModelCard` (the
front matter is `ModelCardData`, serialised by the library); `parse_card` reads a card back for
hub imports (ours, or one huggingtweets published, in either of its layouts, for one person or
several): the display name, the pictures, the data table, the base model and the widget's prompt.
"""

from __future__ import annotations

import html
import logging
import math
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import ftfy
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from bot.core.ingest.cleaning import STAT_ROWS, data_table
from bot.core.limits import MAX_PROMPT_CHARS
from bot.core.urls import well_formed_http_url

log = logging.getLogger(__name__)

_GGUF_LABEL_RE = re.compile(r"(?P<file>[^\n]+\.gguf) \(sha256 (?P<sha256>[0-9a-f]{64})\)", re.IGNORECASE)


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
    gguf = gguf_label_parts(base_model)
    report = metrics.get("voice_report")
    results = eval_results(handle, report, metrics)
    data = ModelCardData(
        language="en",
        model_name=handle if results else None,
        eval_results=results or None,
        tags=["huggingtweets", "tweetalike", "text-generation"],
        widget=[{"text": "My dream is"}],
        # The hub's base_model is a hub id: a GGUF file is named in a field of its own instead.
        base_model=None if gguf else base_model,
        base_model_gguf={"file": gguf[0], "sha256": gguf[1]} if gguf else None,
    )
    name = html.escape(display_name)
    body = "\n\n".join(
        [
            _header(name, handle, avatar_url),
            _how_it_works(name, base_model),
            f"## Training data\n\nThe model was trained on tweets from {name}.\n\n{data_table(stats, name)}",
            *([_version_section(metrics)] if metrics.get("version", 1) > 1 else []),
            _procedure(handle, base_model, method, config, metrics),
            *([_voice_section(handle, report)] if report else []),
            _usage(handle, method),
            "## Limitations and bias\n\nThe model suffers from [the same limitations and bias as GPT-2]"
            "(https://huggingface.co/gpt2#limitations-and-bias).\n\n"
            "In addition, the data present in the user's tweets further affects the text generated "
            "by the model.\n",
        ]
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _version_section(metrics: dict[str, Any]) -> str:
    """Which version this is and how it came to be (an update, or a new training over the last)."""
    version, parent = metrics["version"], metrics.get("continued_from")
    if not parent:
        return f"## Version\n\nVersion {version}: trained anew, replacing version {version - 1}.\n"
    before, after = metrics.get("old_held_out_loss_before"), metrics.get("old_held_out_loss")
    forgot = ""
    if before is not None and after is not None:
        forgot = (
            f" Held-out perplexity on the posts version {parent} was measured on: "
            f"{math.exp(before):.1f} before, {math.exp(after):.1f} after."
        )
    return (
        f"## Version\n\nVersion {version}: continued from version {parent} with "
        f"{metrics.get('new_posts', 0):,} new posts (and {metrics.get('replayed_posts', 0):,} of the "
        f"earlier ones replayed).{forgot}\n"
    )


def eval_results(handle: str, report: dict[str, Any] | None, metrics: dict[str, Any]) -> list[EvalResult]:
    """The voice report and held-out perplexity as the hub's model-index results."""
    figures = [("perplexity", metrics.get("val_perplexity"), "held-out perplexity")]
    if report:
        copies = report.get("copies") or {}
        figures += [
            (
                "accuracy",
                report.get("detector_accuracy"),
                "real-vs-generated detector accuracy (50% = indistinguishable)",
            ),
            (
                "accuracy",
                report.get("base_detector_accuracy"),
                "real-vs-generated detector accuracy of the base model",
            ),
            ("copy_rate", copies.get("exact"), "generated posts equal to a training post"),
            (
                "copy_rate",
                copies.get("run"),
                f"generated posts repeating {report.get('copy_run_words', 8)}+ words of a training post",
            ),
            ("distinct_2", report.get("distinct_2"), "distinct-2 of generated posts"),
            ("distinct_2", report.get("person_distinct_2"), "distinct-2 of the person's held-out posts"),
        ]
    return [
        EvalResult(
            task_type="text-generation",
            dataset_type="tweets",
            dataset_name=f"@{handle}'s posts (held out)",
            metric_type=kind,
            metric_value=float(value),
            metric_name=name,
        )
        for kind, value, name in figures
        if value is not None
    ]


def _voice_section(handle: str, report: dict[str, Any]) -> str:
    """What the voice report found, for readers of the card."""
    rows = [("Real-vs-generated detector accuracy", _percent(report.get("detector_accuracy")))]
    rows.append(("The same for the base model", _percent(report.get("base_detector_accuracy"))))
    copies = report.get("copies") or {}
    rows.append(("Posts equal to a training post", _percent(copies.get("exact"))))
    rows.append(
        (f"Posts repeating {report.get('copy_run_words', 8)}+ words of one", _percent(copies.get("run")))
    )
    rows.append(
        ("Distinct-2 (persona / person)", f"{report.get('distinct_2')} / {report.get('person_distinct_2')}")
    )
    own, person = report.get("length_words") or {}, report.get("person_length_words") or {}
    rows.append(
        (
            "Words a post (persona / person)",
            f"{own.get('mean')} ± {own.get('sd')} / {person.get('mean')} ± {person.get('sd')}",
        )
    )
    return (
        f"## Voice report\n\n{report.get('posts')} posts written by the model with the bot's sampling, "
        f"compared with {report.get('held_out_posts')} of @{handle}'s posts it never saw. A detector "
        "(TF-IDF of character and word n-grams, logistic regression, 5-fold cross-validation) tries to "
        "tell them apart: 50% means it cannot.\n\n" + _two_columns("Measure", rows)
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


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


def gguf_label_parts(base_model: str) -> tuple[str, str] | None:
    """(file name, sha256) of a GGUF base as bases.GgufBase.label writes it, else None."""
    match = _GGUF_LABEL_RE.fullmatch(base_model or "")
    return (match["file"], match["sha256"]) if match else None


def _base_link(base_model: str) -> str:
    gguf = gguf_label_parts(base_model)
    if gguf:
        return f"`{gguf[0]}` (a GGUF file, sha256 `{gguf[1][:16]}…`)"
    return f"[GPT-2](https://huggingface.co/{base_model})"


def _how_it_works(name: str, base_model: str) -> str:
    return (
        f"## How does it work?\n\nThe model is a pre-trained "
        f"{_base_link(base_model)} fine-tuned on {name}'s tweets.\n"
        f"Every post it writes is generated: it is not {name}."
    )


def _procedure(
    handle: str, base_model: str, method: str, config: dict[str, Any], metrics: dict[str, Any]
) -> str:
    kept = " and the best epoch is the one saved" if config.get("keep_best", True) else ""
    return f"""## Training procedure

The model is based on a pre-trained {_base_link(base_model)} which is fine-tuned
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
        if config.get("lora_token_rows"):
            rows.append(
                (
                    "token rows (learning rate)",
                    f"{config['lora_token_rows']} ({config.get('token_rows_learning_rate')})",
                )
            )
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
    if metrics.get("note"):  # the divergence guard's roll-backs, a retry at a lower learning rate
        rows.append(("what training did by itself", metrics["note"]))
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


# -- reading cards (hub imports) -----------------------------------------------------------------
#
# huggingtweets published two header layouts (its template, model_card/README.md, changed in May 2021):
#   older: <div style="...background-image: url('PICTURE')"> then
#          <div style="...font-weight: 800">NAME 🤖 AI Bot </div> <div>@handle bot</div>, and a
#          `| Data | Quantity |` table;
#   newer: three picture divs (`display:none` for the unused ones, the URL quoted as &#39;), a
#          `🤖 AI BOT 🤖` line (`🤖 AI CYBORG 🤖` for several people), NAME ("A & B" for several), `@a-b`,
#          and a `| Data | A | B |` table with one column per person, in the pictures' order.
# Our own cards (render_card above) use the newer layout. Some published cards are double-encoded
# UTF-8 ("ðŸ’Š" for "💊"), so names go through ftfy.

_PICTURE_RE = re.compile(r"background-image\s*:\s*url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE)
_HIDDEN_RE = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_BOLD_RE = re.compile(r"font-weight\s*:\s*(?:bold|[6-9]00)", re.IGNORECASE)
# The newer layout's label line, and the suffix the older layout put after the name: decorations,
# not part of anyone's name.
_BOT_LABEL_RE = re.compile(r"(?:🤖\s*)?AI\s+(?:BOT|CYBORG)(?:\s*🤖)?", re.IGNORECASE)
_OLD_NAME_SUFFIX_RE = re.compile(r"\s*(?:🤖\s*)?\bAI\s+(?:Bot|Cyborg)\s*$", re.IGNORECASE)
# What the older layout's single data column is called: a heading, not a person.
_UNNAMED_COLUMNS = {"quantity", "count", "value", "number"}
_NAME_FIXES = ftfy.TextFixerConfig(
    unescape_html=False, uncurl_quotes=False, fix_character_width=False, explain=False
)


@dataclass
class CardInfo:
    """What a huggingtweets-style card says about its person (or people) and data; missing parts
    stay None or empty."""

    display_name: str | None = None
    # Single person: the figures by STAT_ROWS key. Several: their totals, plus "people" (one dict
    # per data column: "name" and that person's figures), as /train new stores a multi-person model.
    stats: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    avatar_urls: list[str] = field(default_factory=list)  # shown pictures, well formed, in order
    prompt: str | None = None  # the hub widget's example prompt, e.g. "My dream is"

    @property
    def avatar_url(self) -> str | None:
        """The persona's picture: a webhook has one, so a multi-person model shows the first."""
        return self.avatar_urls[0] if self.avatar_urls else None


def read_card(folder: Path) -> CardInfo:
    """parse_card of the folder's README.md; an empty CardInfo when there is none."""
    path = folder / "README.md"
    return parse_card(path.read_text(encoding="utf-8", errors="replace") if path.is_file() else "")


def parse_card(text: str) -> CardInfo:
    """Read a huggingtweets-style card (either published layout, one person or several, or ours)."""
    metadata, body = _front_matter(text)
    header = _HeaderReader.read(body.split("\n#", 1)[0])  # the block above the first heading
    columns, rows = _table(body)
    base = metadata.get("base_model")
    gguf = metadata.get("base_model_gguf")
    if isinstance(gguf, dict) and isinstance(gguf.get("file"), str) and isinstance(gguf.get("sha256"), str):
        base = f"{gguf['file']} (sha256 {gguf['sha256']})"
    return CardInfo(
        display_name=header.display_name() or _single_column_name(columns),
        stats=_stats(columns, rows),
        base_model=base if isinstance(base, str) else None,
        avatar_urls=[url for url in map(_avatar, header.pictures) if url],
        prompt=_widget_prompt(metadata.get("widget")),
    )


def fix_name(raw: str) -> str | None:
    """A name as a person wrote it: mojibake repaired, whitespace collapsed; None when empty."""
    return " ".join(ftfy.fix_text(raw, _NAME_FIXES).split()) or None


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    """The YAML front matter as a dict (through huggingface_hub, as the hub reads it) and the body."""
    if not text.startswith("---"):
        return {}, text
    try:
        card = ModelCard(text, ignore_metadata_errors=True)
    except (ValueError, yaml.YAMLError):  # broken front matter: the rest of the card still counts
        return {}, text.split("\n---", 1)[-1]
    return card.data.to_dict(), card.text


class _HeaderReader(HTMLParser):
    """The header's shown pictures and the text of each of its divs (style, text), in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # attribute values come unescaped (&#39; -> ')
        self.pictures: list[str] = []
        self.lines: list[tuple[str, str]] = []
        self._open: list[tuple[str, list[str]]] = []

    @classmethod
    def read(cls, html_text: str) -> _HeaderReader:
        reader = cls()
        reader.feed(html_text)
        reader.close()
        while reader._open:  # a div left open at the end still counts
            reader.handle_endtag("div")
        return reader

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "div":
            return
        style = dict(attrs).get("style") or ""
        self._open.append((style, []))
        picture = _PICTURE_RE.search(style)
        if picture and picture.group(2).strip() and not _HIDDEN_RE.search(style):
            self.pictures.append(picture.group(2).strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._open:
            style, parts = self._open.pop()
            text = fix_name("".join(parts))
            if text:
                self.lines.append((style, text))

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][1].append(data)

    def display_name(self) -> str | None:
        """The first bold line that is neither the "🤖 AI BOT 🤖" label nor an @handle line."""
        labelled = any(_BOT_LABEL_RE.fullmatch(text) for _, text in self.lines)
        for style, text in self.lines:
            if not _BOLD_RE.search(style) or _BOT_LABEL_RE.fullmatch(text) or text.startswith("@"):
                continue
            # Only the older layout (no label line) wrote "🤖 AI Bot" after the name; in the newer
            # one the line is the name alone, whatever it ends with.
            return (text if labelled else _OLD_NAME_SUFFIX_RE.sub("", text).strip()) or None
        return None


def _avatar(url: str) -> str | None:
    avatar = well_formed_http_url(url)
    if avatar is None:
        log.info("the card's picture %r is not a usable URL; the persona gets none", url[:200])
    return avatar


def _cells(line: str) -> list[str] | None:
    """A markdown table row's cells, unescaped; None for a line that is not a table row."""
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|") and len(line) > 1):
        return None
    cells = re.split(r"(?<!\\)\|", line[1:-1])
    return [html.unescape(cell.replace("\\|", "|")).strip() for cell in cells]


def _table(body: str) -> tuple[list[str], dict[str, list[str]]]:
    """The data table: its column headings (after "Data"), and every table row by its label."""
    columns: list[str] = []
    rows: dict[str, list[str]] = {}
    for line in body.splitlines():
        cells = _cells(line)
        if not cells:
            continue
        if not columns and cells[0].lower() == "data" and len(cells) > 1:
            columns = cells[1:]
        rows.setdefault(cells[0].lower(), cells[1:])
    return columns, rows


def _stats(columns: list[str], rows: dict[str, list[str]]) -> dict[str, Any]:
    count = max(len(columns), 1)
    people: list[dict[str, Any]] = [{} for _ in range(count)]
    for key, label in STAT_ROWS:
        for person, value in zip(people, rows.get(label.lower(), []), strict=False):
            if re.fullmatch(r"\d[\d,]*", value):
                person[key] = int(value.replace(",", ""))
    if count == 1:
        return people[0]
    totals = {
        key: sum(p.get(key, 0) for p in people) for key, _ in STAT_ROWS if any(key in p for p in people)
    }
    named = [
        dict(p, name=fix_name(name) or f"person {i}")
        for i, (p, name) in enumerate(zip(people, columns, strict=True), 1)
    ]
    return dict(totals, people=named)


def _single_column_name(columns: list[str]) -> str | None:
    """The newer layout's `| Data | Name |` heading, when the header gave no name."""
    if len(columns) == 1 and columns[0].lower() not in _UNNAMED_COLUMNS:
        return fix_name(columns[0])
    return None


def _widget_prompt(widget: Any) -> str | None:
    """The first example text of the hub's inference widget, when it fits a /impersonate prompt."""
    entries = widget if isinstance(widget, list) else [widget]
    for entry in entries:
        text = entry.get("text") if isinstance(entry, dict) else None
        if isinstance(text, str) and " ".join(text.split()):
            prompt = " ".join(text.split())
            return prompt if len(prompt) <= MAX_PROMPT_CHARS else None
    return None
