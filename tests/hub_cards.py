"""Model cards as huggingtweets published them on the hub, for the import tests.

`published_card()` is the real `huggingtweets/js_thrill` card (its older layout, double-encoded
UTF-8 included) from ../shared/data/cards/. `newer_layout_card()` writes a card the way
huggingtweets' later template (model_card/README.md, May 2021 on) was filled in by its demo
notebook: three picture slots (unused ones `display:none` with an empty URL, quotes as `&#39;`),
"🤖 AI BOT 🤖" ("🤖 AI CYBORG 🤖" for several people: the notebook replaced every "BOT"), the names
joined by " & " in the order they were typed, the handles sorted and joined by "-", and one data
column per person in the typed order. The people below are made up.
"""

# ruff: noqa: E501 - the cards' lines are as long as huggingtweets wrote them

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_CARDS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cards"
JS_THRILL = "huggingtweets_js_thrill_README.md"
JS_THRILL_NAME = "john stuart placebo 💊"  # the card says "john stuart placebo ðŸ’Š ðŸ¤– AI Bot "
JS_THRILL_AVATAR = "https://pbs.twimg.com/profile_images/1176503655643648002/90nRSNMW_400x400.jpg"
JS_THRILL_STATS = {"downloaded": 3246, "retweets": 636, "short": 281, "kept": 2329}


def published_card(name: str = JS_THRILL) -> str:
    """A card as published on the hub, byte for byte, or a skip when ../shared is absent."""
    path = SHARED_CARDS / name
    if not path.is_file():
        pytest.skip(f"real model card {path} is not available (../shared/data/cards/ is absent)")
    return path.read_text(encoding="utf-8")


_OLDER_LAYOUT = """---
language: en
thumbnail: https://www.huggingtweets.com/{handle}/1614000000000/predictions.png
tags:
- huggingtweets
widget:
- text: "My dream is"
---

<div>
<div style="width: 132px; height:132px; border-radius: 50%; background-size: cover; background-image: url('{picture}')">
</div>
<div style="margin-top: 8px; font-size: 19px; font-weight: 800">{name}</div>
<div style="font-size: 15px">@{handle} bot</div>
</div>

I was made with [huggingtweets](https://github.com/borisdayma/huggingtweets).

## Training data

The model was trained on [@{handle}'s tweets](https://twitter.com/{handle}).

| Data | Quantity |
| --- | --- |
| Tweets downloaded | 1250 |
| Retweets | 30 |
| Short tweets | 20 |
| Tweets kept | 1200 |
"""


def older_layout_card(
    name_line: str, picture: str = "https://pbs.twimg.com/profile_images/1/a_400x400.jpg", handle: str = "ada"
) -> str:
    """A card in the layout of early 2021; name_line is the name div's text ("NAME 🤖 AI Bot ")."""
    return _OLDER_LAYOUT.format(name=name_line, picture=picture, handle=handle)


_PICTURE_SLOT = """        <div
			style="display:{display}; margin-left: 4px; margin-right: 4px; width: 92px; height:92px; border-radius: 50%; background-size: cover; background-image: url(&#39;{url}&#39;)">
        </div>"""

_NEWER_LAYOUT = """---
language: en
thumbnail: http://www.huggingtweets.com/{handle}/1620432000000/predictions.png
tags:
- huggingtweets
widget:
- text: "My dream is"
---

<div class="inline-flex flex-col" style="line-height: 1.5;">
    <div class="flex">
{pictures}
    </div>
    <div style="text-align: center; margin-top: 3px; font-size: 16px; font-weight: 800">🤖 AI {bot} 🤖</div>
    <div style="text-align: center; font-size: 16px; font-weight: 800">{names}</div>
    <div style="text-align: center; font-size: 14px;">@{handle}</div>
</div>

I was made with [huggingtweets](https://github.com/borisdayma/huggingtweets).

Create your own bot based on your favorite user with [the demo](https://colab.research.google.com/github/borisdayma/huggingtweets/blob/master/huggingtweets-demo.ipynb)!

## How does it work?

The model uses the following pipeline.

![pipeline](https://github.com/borisdayma/huggingtweets/blob/master/img/pipeline.png?raw=true)

## Training data

The model was trained on tweets from {names}.

| Data | {columns} |
| --- | {split} |
| Tweets downloaded | {downloaded} |
| Retweets | {retweets} |
| Short tweets | {short} |
| Tweets kept | {kept} |

## Training procedure

The model is based on a pre-trained [GPT-2](https://huggingface.co/gpt2) which is fine-tuned on @{handle}'s tweets.

## How to use

You can use this model directly with a pipeline for text generation:

```python
from transformers import pipeline
generator = pipeline('text-generation',
                     model='huggingtweets/{handle}')
generator("My dream is", num_return_sequences=5)
```

## Limitations and bias

The model suffers from [the same limitations and bias as GPT-2](https://huggingface.co/gpt2#limitations-and-bias).
"""


def newer_layout_card(people: list[dict]) -> str:
    """people: dicts with handle, name, picture and the four figures, in the order they were typed."""
    slots = [(p["picture"], "inherit") for p in people] + [("", "none")] * (3 - len(people))
    return _NEWER_LAYOUT.format(
        handle="-".join(sorted(p["handle"] for p in people)),
        pictures="\n".join(_PICTURE_SLOT.format(display=d, url=u) for u, d in slots),
        bot="BOT" if len(people) == 1 else "CYBORG",
        names=" & ".join(p["name"] for p in people),
        columns=" | ".join(p["name"] for p in people),
        split=" | ".join(["---"] * len(people)),
        **{
            key: " | ".join(str(p[key]) for p in people)
            for key in ("downloaded", "retweets", "short", "kept")
        },
    )


JS_THRILL_NEWER = {
    "handle": "js_thrill",
    "name": "JS Thrill",
    "picture": "https://pbs.twimg.com/profile_images/1380000000000000000/AbCdEf12_400x400.jpg",
    "downloaded": "3,250",
    "retweets": 40,
    "short": 449,
    "kept": 2761,
}
# A cyborg typed as @zoe_codes then @amir_h: the repo is huggingtweets/amir_h-zoe_codes (handles
# sorted), while names, pictures and data columns keep the typed order.
ZOE = {
    "handle": "zoe_codes",
    "name": "Zoë Codes ✨",
    "picture": "https://pbs.twimg.com/profile_images/1390000000000000001/zoe_400x400.jpg",
    "downloaded": 3247,
    "retweets": 512,
    "short": 380,
    "kept": 2355,
}
AMIR = {
    "handle": "amir_h",
    "name": "Amir H.",
    "picture": "https://pbs.twimg.com/profile_images/1390000000000000002/amir_400x400.png",
    "downloaded": 3190,
    "retweets": 1204,
    "short": 611,
    "kept": 1375,
}
HUGGINGTWEETS_CARD = newer_layout_card([JS_THRILL_NEWER])
CYBORG_CARD = newer_layout_card([ZOE, AMIR])
CYBORG_REPO = "huggingtweets/amir_h-zoe_codes"
