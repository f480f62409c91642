"""The voice report: its measures on real posts, and the report a training leaves, through the CLI."""

import io
import json
import random
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from bot.core.ingest import ingest_path
from bot.core.personas import KEPT_POSTS_FILE
from bot.core.training.voicereport import (
    copy_rates,
    detector_accuracy,
    distinct_2,
    length_words,
    openings,
)
from bot.discord.cogs.models import zip_folder
from tests.conftest import TINY_CORPUS, shared_corpus
from tests.test_cli import cli


@pytest.fixture(scope="module")
def real_posts() -> list[str]:
    return ingest_path(shared_corpus("katyperry_topic_labelling.csv")).tweets


def test_the_detector_cannot_tell_a_person_from_herself(real_posts):
    posts = random.Random(1).sample(real_posts, 400)
    assert abs(detector_accuracy(posts[:200], posts[200:]) - 0.5) < 0.1


def test_the_detector_tells_one_person_from_another(real_posts):
    others = ingest_path(shared_corpus("barackobama_fivethirtyeight.csv")).tweets
    assert detector_accuracy(real_posts[:200], others[:200]) > 0.85


def test_the_detector_says_nothing_on_too_few_posts():
    assert detector_accuracy(["one post"] * 5, ["another"] * 5) is None


def test_copies_distinct_2_and_length():
    train = ["the quick brown fox jumps over the lazy dog today", "hello world"]
    generated = ["Hello   world", "so the quick brown fox jumps over the lazy dog again", "new words"]
    third = pytest.approx(1 / 3, abs=1e-3)
    assert copy_rates(generated, train) == {"exact": third, "run": third}
    assert distinct_2(["a b a b"]) == pytest.approx(2 / 3, abs=1e-3)
    assert distinct_2([]) is None
    assert length_words(["one two", "one two three four"]) == {"mean": 3.0, "sd": 1.0}
    assert openings(["@ann yes", "Well then", "ated to see", "@bo hi"]) == {"mention": 0.5, "capital": 0.25}
    assert openings([]) is None


def test_train_prints_the_report_and_report_shows_it_again(settings, tmp_path):
    trained = cli(settings, "train", "--guild", "7", "--handle", "alice", "--file", str(TINY_CORPUS))
    assert trained.returncode == 0, trained.stderr
    line = re.search(r"voice report: real-vs-generated accuracy (\d+)% \(base (\d+)%\)", trained.stdout)
    assert line, trained.stdout
    assert "copies " in trained.stdout and "distinct-2 " in trained.stdout

    folder = Path(re.search(r"Saved alice to (.+)", trained.stdout).group(1).strip())
    report = json.loads((folder / "voice_report.json").read_text())
    assert report["posts"] == 30 and report["held_out_posts"] == 40
    kept = json.loads((folder / KEPT_POSTS_FILE).read_text())
    assert len(kept["held_out"]) == 40 and len(kept["train"]) == 360

    # The card carries it as the hub's model-index; an export leaves the uploaded posts out.
    metadata = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    results = metadata["model-index"][0]["results"]
    names = {m["name"]: m["value"] for r in results for m in r["metrics"]}
    assert results[0]["task"]["type"] == "text-generation"
    accuracy = names["real-vs-generated detector accuracy (50% = indistinguishable)"]
    assert accuracy == report["detector_accuracy"]
    assert "held-out perplexity" in names and "## Voice report" in (folder / "README.md").read_text()
    with zipfile.ZipFile(io.BytesIO(zip_folder(folder))) as archive:
        assert KEPT_POSTS_FILE not in archive.namelist() and "voice_report.json" in archive.namelist()

    shown = cli(settings, "report", "--guild", "7", "--handle", "alice")
    assert shown.returncode == 0, shown.stderr
    assert f"real-vs-generated accuracy {line.group(1)}%" in shown.stdout
    assert "30 generated posts vs 40 held-out posts" in shown.stdout

    again = cli(settings, "report", "--guild", "7", "--handle", "alice", "--recompute")
    assert again.returncode == 0, again.stderr
    assert "real-vs-generated accuracy" in again.stdout

    missing = cli(settings, "report", "--guild", "7", "--handle", "nobody")
    assert missing.returncode == 2 and "error:" in missing.stderr and "Traceback" not in missing.stderr
