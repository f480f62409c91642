"""The quality bench (bench/quality.py) in miniature, so it cannot rot: a tiny proxy base, a few steps."""

from bench.quality import (
    SHARED_TWEETS,
    Bench,
    Variant,
    gpt2_124m_persona_bytes,
    people,
    quick,
    run_bench,
    table,
)
from bot.core.training.recipe import TrainConfig
from tests.conftest import tiny_tweets

PERSONA_LIMIT = 25 * 10**6  # bytes of weights per persona on disk, with GPT-2-124M's shapes


def test_the_quality_bench_runs_end_to_end(tmp_path):
    if any(SHARED_TWEETS.glob("*.csv")):
        corpora = people(SHARED_TWEETS)
    else:  # without the shared corpora: two made-up people from the tiny corpus
        tweets = tiny_tweets()
        corpora = {"alice": tweets[: len(tweets) // 2], "bob": tweets[len(tweets) // 2 :]}
    person = sorted(corpora)[0]
    variants = [
        Variant("full lr 2e-4", {"method": "full", "learning_rate": 2e-4}),
        Variant("default LoRA", {"method": "lora"}),
    ]
    bench = quick(Bench(variants=variants, persons=[person], cache=tmp_path, corpora=corpora))
    rows = run_bench(bench, tmp_path / "rows.jsonl")
    assert [r["variant"] for r in rows] == ["full lr 2e-4", "default LoRA"]
    for row in rows:
        assert row["train_tokens"] > 0 and row["val_ppl"] > 1 and row["disk_bytes"] > 0
        assert row["best_epoch"] in (1, 2) and row["initial_val_ppl"] > 1
    assert rows[0]["train_tokens"] == rows[1]["train_tokens"]  # equal training tokens
    assert rows[0]["base_prose_ppl"] > 1  # the proxy's own perplexity is recorded
    text = table(rows)
    assert "base, before fine-tuning" in text and "| default LoRA |" in text and "best" in text
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 2


def test_the_default_persona_fits_the_size_limit_with_gpt2_124m_shapes():
    defaults = TrainConfig()
    settings = {"method": defaults.method}
    assert gpt2_124m_persona_bytes(settings) <= PERSONA_LIMIT
    # Why a full fine-tune is not the default: a whole GPT-2 per persona.
    assert gpt2_124m_persona_bytes({"method": "full"}) > 400 * 10**6
