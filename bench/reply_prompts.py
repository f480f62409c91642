"""Which prompt should a persona's answer to a Discord message start from? (/chatter, bot/core/conversation/chatter.py)

    nice .venv/bin/python -m bench.reply_prompts [--data FILE] [--seconds 300] [--held-out 200]

An X archive holds the person's own replies, which begin with `@someone`. A persona answering a
message could start from nothing (a fresh post), from a reply-shaped prompt (`@member `), and,
with the Message Content intent, read the member's message first as the tweet before its own.

No pretrained GPT-2 can be downloaded here, so the proxy is a small GPT-2 (GPT-2's real
tokenizer, 4 layers) trained from scratch on the person's tweets for `--seconds` on the CPU (the
weights with the best loss on 5% of the training tweets are kept), in the bot's own training
format (`<|endoftext|>tweet<|endoftext|>`, packed). Held-out replies are
then scored: the loss of the reply's body (the text after its leading @mentions, plus the end of
the tweet) under each prompt shape, with the same tokens scored in every shape. Held-out posts
that are not replies are scored too, to see what a reply-shaped prompt costs an ordinary post.

Shapes:
- fresh: nothing before the body (what a persona answer would be without chatter's prompt);
- @real: the reply's own first @handle (an upper bound: the bot never knows it);
- @member: a name the model never saw, as the bot has (`@member`, from the Discord username);
- @member, trailing space: the same prompt ending in a space (GPT-2 writes " word" as one token,
  so a prompt that ends in a space leaves the model a token it never saw in training);
- prev + @member: the tweet before it in the archive (often the thread it answers) as context;
- random + @member: an unrelated tweet as context (a control for "any context").
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.core.ingest.pipeline import ingest_path  # noqa: E402
from bot.core.training.data import pack_blocks  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tweets" / "elonmusk_bytes_literal.csv"
TOKENIZER = ROOT.parent / "shared" / "models" / "gpt2-tokenizer"
LEADING_MENTIONS = re.compile(r"^(?:@\w+\s+)+")


def split_reply(tweet: str) -> tuple[str, str] | None:
    """(first @handle, body) of a reply; None for a post that is not one (or is only mentions)."""
    match = LEADING_MENTIONS.match(tweet)
    if not match or not tweet[match.end() :].strip():
        return None
    return match.group(0).split()[0], tweet[match.end() :]


class CompactTokenizer:
    """GPT-2's tokens, renumbered to those the corpus uses (id 0: end-of-text): a 50,257-row
    output layer would cost most of a CPU proxy's time on tokens that never occur."""

    def __init__(self, tokenizer, texts: list[str]):
        self.tokenizer = tokenizer
        used = sorted({i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]})
        self.ids = {i: n + 1 for n, i in enumerate(used)}
        self.eos_token_id = 0
        self.size = len(used) + 1

    def encode(self, text: str) -> list[int]:
        # A token the corpus never used (a rare split of "@member") maps to end-of-text's row.
        return [self.ids.get(i, 0) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]


def train_proxy(tokenizer: CompactTokenizer, tweets: list[str], seconds: float, seed: int):
    """Train until `seconds` pass, keeping the weights with the best loss on 5% of the tweets (a
    few thousand tweets are memorised within minutes: the held-out loss turns up long before)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=tokenizer.size,
        n_positions=256,
        n_embd=256,
        n_layer=4,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    rng = random.Random(seed)
    order = rng.sample(tweets, len(tweets))
    cut = max(20, len(order) // 20)
    encoded = [[0, *tokenizer.encode(t), 0] for t in order[cut:]]  # the bot's training format
    blocks = [b for b in pack_blocks(encoded, 128) if len(b) == 128]
    validation = [
        b for b in pack_blocks([[0, *tokenizer.encode(t), 0] for t in order[:cut]], 128) if len(b) > 1
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    start, steps, best, best_state = time.monotonic(), 0, float("inf"), None
    while time.monotonic() - start < seconds:
        model.train()
        batch = torch.tensor(rng.sample(blocks, min(16, len(blocks))))
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        steps += 1
        if steps % 10 == 0:
            loss = validation_loss(model, validation)
            if loss < best:
                best, best_state = loss, {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    print(f"proxy: {steps} steps in {seconds:.0f} s, best validation loss {best:.3f}", file=sys.stderr)
    return model


@torch.inference_mode()
def validation_loss(model, blocks: list[list[int]]) -> float:
    model.eval()
    losses = [float(model(input_ids=torch.tensor([b]), labels=torch.tensor([b])).loss) for b in blocks]
    return sum(losses) / len(losses)


@torch.inference_mode()
def body_loss(model, tokenizer, context: str, prefix: str, body: str) -> tuple[float, int]:
    """Summed NLL (nats) of `body` + end-of-text after `[context]` + `prefix`, and the token count."""
    eos = tokenizer.eos_token_id
    before = [eos, *tokenizer.encode(context), eos] if context else []
    before += [eos, *tokenizer.encode(prefix)]
    target = [*tokenizer.encode(body), eos]
    ids = (before + target)[-256:]
    n = min(len(target), len(ids) - 1)
    logits = model(input_ids=torch.tensor([ids])).logits[0, -n - 1 : -1].float()
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[-n:]), reduction="sum")
    return float(nll), n


def score(model, tokenizer, cases) -> dict[str, float]:
    """Mean NLL per body token for each shape, over (context-free) cases."""
    totals: dict[str, list[float]] = {}
    for shape, context, prefix, body in cases:
        nll, n = body_loss(model, tokenizer, context, prefix, body)
        total = totals.setdefault(shape, [0.0, 0])
        total[0] += nll
        total[1] += n
    return {shape: nll / max(1, n) for shape, (nll, n) in totals.items()}


def shapes_for(tweet: str, before: str, unrelated: str) -> list[tuple[str, str, str, str]]:
    """(shape, context, prompt, body) for one held-out tweet. The body keeps the space that joins it
    to a prompt (" word" is one GPT-2 token, as in the training text), so a prompt never ends in a
    space: `@member` + ` body`, not `@member ` + `body` (a lone " " token the model never saw)."""
    reply = split_reply(tweet)
    handle, body = reply if reply else ("@someone", tweet)
    return [
        ("fresh", "", "", body),
        ("@real", "", handle, " " + body),
        ("@member", "", "@member", " " + body),
        ("@member, trailing space", "", "@member ", body),
        ("prev + @member", before, "@member", " " + body),
        ("random + @member", unrelated, "@member", " " + body),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not Path(args.data).is_file() or not TOKENIZER.is_dir():
        sys.exit(f"needs {args.data} and {TOKENIZER} (the shared data folder)")
    from transformers import AutoTokenizer

    torch.set_num_threads(max(1, torch.get_num_threads() // 2))
    tweets = ingest_path(args.data).tweets  # the archive's order, cleaned as for a training
    tokenizer = CompactTokenizer(AutoTokenizer.from_pretrained(TOKENIZER), [*tweets, "@member @someone "])
    rng = random.Random(args.seed)
    order = list(range(1, len(tweets)))
    rng.shuffle(order)
    replies = [i for i in order if split_reply(tweets[i])][: args.held_out]
    posts = [i for i in order if not split_reply(tweets[i])][: args.held_out]
    held = set(replies) | set(posts)
    model = train_proxy(
        tokenizer, [t for i, t in enumerate(tweets) if i not in held], args.seconds, args.seed
    )
    print(
        f"{len(tweets)} tweets, {sum(1 for t in tweets if split_reply(t))} replies; held out "
        f"{len(replies)} replies and {len(posts)} other posts\n"
    )
    print("| prompt shape | held-out replies: NLL/token of the body | other posts: NLL/token |")
    print("| --- | --- | --- |")
    results = []
    for ids in (replies, posts):
        cases = [
            case
            for i in ids
            for case in shapes_for(tweets[i], tweets[i - 1], tweets[rng.randrange(len(tweets))])
        ]
        results.append(score(model, tokenizer, cases))
    for shape in results[0]:
        cells = [f"{r[shape]:.3f} (ppl {math.exp(r[shape]):.1f})" for r in results]
        print(f"| {shape} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
