"""Does the persona sound like the person? The voice report, computed after every training.

The persona writes N posts with the settings /impersonate uses (through the same Generator, so
its recitation filter applies as it does for users), and they are compared with the person's
held-out posts, which no training step saw:

  * real-vs-generated accuracy: a detector (TF-IDF of character 2-5-grams and word 1-2-grams,
    logistic regression; scikit-learn) trained and scored by k-fold cross-validation on equal
    numbers of real and generated posts. 50% means it cannot tell them apart. The base model's own
    accuracy on the same real posts is the reference (its posts are generated once per base and
    sampling settings, and cached);
  * copy rate: generated posts equal to a training post, and posts that repeat a run of
    COPY_RUN_WORDS words of one;
  * distinct-2 (unique word pairs over all word pairs) and length in words, next to the person's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bot.core.generation.decoding import Sampling

log = logging.getLogger(__name__)

REPORT_FILE = "voice_report.json"
COPY_RUN_WORDS = 8
FOLDS = 5
MIN_POSTS_PER_SIDE = 2 * FOLDS  # fewer real posts than this: no detector figure (too noisy to mean anything)
CHUNK = 25  # posts sampled per batch: bounded memory, still one forward pass for many rows
_WORD_RE = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class ReportPlan:
    """What a training's voice report needs from the settings of the process that trains."""

    posts: int  # VOICE_REPORT_POSTS; 0 = no report
    sampling: Sampling
    cache_dir: str  # where the bases' reference posts are kept (MODELS_DIR/.bases/voice)


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def distinct_2(posts: list[str]) -> float | None:
    pairs = [pair for post in posts for pair in zip(words(post), words(post)[1:], strict=False)]
    return round(len(set(pairs)) / len(pairs), 3) if pairs else None


def length_words(posts: list[str]) -> dict[str, float] | None:
    counts = [len(post.split()) for post in posts]
    if not counts:
        return None
    spread = statistics.pstdev(counts) if len(counts) > 1 else 0.0
    return {"mean": round(statistics.fmean(counts), 1), "sd": round(spread, 1)}


def openings(posts: list[str]) -> dict[str, float] | None:
    """How posts begin: the share that open with an @mention (a reply) and with a capital letter.
    A reader spots a post that starts mid-word at once; these shares show it."""
    if not posts:
        return None
    share = lambda test: round(sum(map(test, posts)) / len(posts), 3)  # noqa: E731
    return {"mention": share(lambda p: p.startswith("@")), "capital": share(lambda p: p[:1].isupper())}


def copy_rates(generated: list[str], train_posts: list[str]) -> dict[str, float]:
    """Share of generated posts equal to a training post, and share with a long run of one."""
    if not generated:
        return {"exact": 0.0, "run": 0.0}
    norm = {" ".join(words(t)) for t in train_posts}
    runs = {
        tuple(w[i : i + COPY_RUN_WORDS])
        for t in train_posts
        for w in [words(t)]
        for i in range(len(w) - COPY_RUN_WORDS + 1)
    }
    exact = sum(" ".join(words(g)) in norm for g in generated)
    repeats = sum(
        any(tuple(w[i : i + COPY_RUN_WORDS]) in runs for i in range(len(w) - COPY_RUN_WORDS + 1))
        for g in generated
        for w in [words(g)]
    )
    return {"exact": round(exact / len(generated), 3), "run": round(repeats / len(generated), 3)}


def detector_accuracy(real: list[str], generated: list[str], seed: int = 0) -> float | None:
    """k-fold accuracy of a real-vs-generated classifier on balanced classes (0.5 = can't tell)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import FeatureUnion, make_pipeline

    n = min(len(real), len(generated))
    if n < MIN_POSTS_PER_SIDE:
        return None
    texts = real[:n] + generated[:n]
    labels = [1] * n + [0] * n
    features = FeatureUnion(
        [
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
            ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)),
        ]
    )
    detector = make_pipeline(features, LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    return round(float(cross_val_score(detector, texts, labels, cv=folds).mean()), 3)


def write_posts(model: str, n: int, sampling: Sampling) -> list[str]:
    """n posts from a model folder (or hub id), sampled as /impersonate samples them."""
    from bot.core.generation.generator import Generator

    generator = Generator(sampling, cache_size=1)
    posts: list[str] = []
    while len(posts) < n:
        batch = generator.generate(model, "", min(CHUNK, n - len(posts)))
        if not batch:
            break  # nothing acceptable came out three times over: report what there is
        posts += batch
    generator.forget(model)
    return posts


def base_posts(base: str, plan: ReportPlan) -> list[str]:
    """The base model's own posts for the reference figure, generated once per base and settings."""
    key = hashlib.sha256(json.dumps([base, asdict(plan.sampling), plan.posts]).encode()).hexdigest()[:16]
    cached = Path(plan.cache_dir) / f"{key}.json"
    if cached.is_file():
        try:
            return json.loads(cached.read_text(encoding="utf-8"))["posts"]
        except (OSError, ValueError, KeyError):
            log.warning("Ignoring an unreadable reference file %s", cached)
    log.info("Voice report: sampling %s posts from the base %s once, for reference", plan.posts, base)
    posts = write_posts(base, plan.posts, plan.sampling)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".tmp-{os.getpid()}")
    partial.write_text(json.dumps({"base": base, "posts": posts}), encoding="utf-8")
    os.replace(partial, cached)  # never a half-written reference
    return posts


def voice_report(
    folder: Path,
    base: str,
    split: tuple[list[str], list[str]],
    metrics: dict[str, Any],
    plan: ReportPlan,
) -> dict[str, Any]:
    """The report for the persona in `folder` (written there as voice_report.json) and returned;
    `split` is the run's (training posts, held-out posts), `base` a loadable name of its base."""
    train_posts, held_out = split
    generated = write_posts(str(folder), plan.posts, plan.sampling)
    reference = base_posts(base, plan)
    report = {
        "posts": len(generated),
        "held_out_posts": len(held_out),
        "base": base,  # what the reference posts came from (a recomputed report samples it again)
        "detector_accuracy": detector_accuracy(held_out, generated),
        "base_detector_accuracy": detector_accuracy(held_out, reference),
        "copies": copy_rates(generated, train_posts),
        "copy_run_words": COPY_RUN_WORDS,
        "distinct_2": distinct_2(generated),
        "person_distinct_2": distinct_2(held_out[: len(generated)]),
        "length_words": length_words(generated),
        "person_length_words": length_words(held_out),
        "openings": openings(generated),
        "person_openings": openings(held_out),
        "perplexity_before": metrics.get("initial_val_perplexity"),
        "perplexity_after": metrics.get("val_perplexity"),
        "examples": generated[:3],
    }
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def report_line(report: dict[str, Any] | None) -> str:
    """One line: what `train` prints last and the "ready" message carries."""
    if not report:
        return ""
    accuracy, base = report.get("detector_accuracy"), report.get("base_detector_accuracy")
    if accuracy is None:
        head = f"real-vs-generated accuracy n/a (only {report.get('held_out_posts', 0)} held-out posts)"
    else:
        head = f"real-vs-generated accuracy {accuracy:.0%}" + (
            f" (base {base:.0%})" if base is not None else ""
        )
    parts = [head + ", 50% = indistinguishable"]
    copies = report.get("copies") or {}
    exact, run = copies.get("exact", 0), copies.get("run", 0)
    parts.append(f"copies {exact:.0%} exact, {run:.0%} with {COPY_RUN_WORDS}+ words of a post")
    if report.get("distinct_2") is not None and report.get("person_distinct_2") is not None:
        parts.append(f"distinct-2 {report['distinct_2']:.2f} (person {report['person_distinct_2']:.2f})")
    own, person = report.get("length_words"), report.get("person_length_words")
    if own and person:
        parts.append(f"{own['mean']:.0f} words a post (person {person['mean']:.0f})")
    return "; ".join(parts)
