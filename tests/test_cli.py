"""`python -m bot.cli`, run as a user would, on the same registry and store as the bot."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bot.core.personas.modelstore import ModelStore
from tests.conftest import TINY_CORPUS
from tests.fileserver import TWEETS, FileServer, archive_with_media

ROOT = Path(__file__).resolve().parents[1]


def cli_env(settings) -> dict[str, str]:
    return os.environ | {
        "DATABASE_PATH": settings.database_path,
        "MODELS_DIR": settings.models_dir,
        "BASE_MODEL": settings.base_model,
        "TRAIN_MAX_STEPS": "6",
        "TRAIN_BLOCK_SIZE": "64",
        "GENERATION_MAX_NEW_TOKENS": "24",
        "GENERATION_MIN_NEW_TOKENS": "4",
        "HF_HUB_OFFLINE": "1",
        "VOICE_REPORT_POSTS": "30",
    }


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_generate_list_delete(settings, tmp_path):
    trained = cli(
        settings,
        "train",
        "--guild",
        "7",
        "--handle",
        "Alice",
        "--file",
        str(TINY_CORPUS),
        "--display-name",
        "Alice A.",
    )
    assert trained.returncode == 0, trained.stderr
    assert "| Tweets downloaded | 400 |" in trained.stdout and "| Tweets kept |" in trained.stdout
    assert "Saved alice" in trained.stdout and "validation loss" in trained.stdout
    assert "6/6" in trained.stderr  # the progress bar reached the last step

    listed = cli(settings, "list", "--guild", "7")
    assert listed.returncode == 0 and "alice" in listed.stdout and "Alice A." in listed.stdout
    assert "alice" not in cli(settings, "list", "--guild", "8").stdout  # another guild sees nothing

    generated = cli(settings, "generate", "--guild", "7", "--handle", "alice", "-n", "3", "--prompt", "We")
    assert generated.returncode == 0, generated.stderr
    lines = generated.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("Alice A. (@alice): We") for line in lines)

    assert cli(settings, "delete", "--guild", "7", "--handle", "alice").returncode == 0
    gone = cli(settings, "generate", "--guild", "7", "--handle", "alice")
    assert gone.returncode == 2 and "no model called `alice`" in gone.stderr


def test_errors_are_short_and_clear(settings, tmp_path):
    binary = tmp_path / "tweets.csv"
    binary.write_bytes(bytes(range(256)) * 40)
    bad = cli(settings, "train", "--guild", "7", "--handle", "bob", "--file", str(binary))
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    missing = cli(settings, "train", "--guild", "7", "--handle", "bob", "--file", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "error:" in missing.stderr and "Traceback" not in missing.stderr
    handle = cli(settings, "train", "--guild", "7", "--handle", "../etc", "--file", str(TINY_CORPUS))
    assert handle.returncode == 2 and "error:" in handle.stderr
    assert not list(Path(settings.models_dir).glob("7/*"))


async def test_train_from_a_link(settings):
    """--file takes a link: the archive read by range requests, private addresses only when allowed."""
    async with FileServer() as server:
        server.files["twitter.zip"], _ = archive_with_media()
        url = server.url("ranged/twitter.zip")
        refused = await cli_async(settings, "train", "--guild", "7", "--handle", "bob", "--file", url)
        assert refused.returncode == 2 and "private or local address" in refused.stderr
        assert server.served.hits == []
        trained = await cli_async(
            settings, "train", "--guild", "7", "--handle", "bob", "--file", url, ALLOW_PRIVATE_URLS="true"
        )
    assert trained.returncode == 0, trained.stderr
    assert f"| Tweets kept | {len(TWEETS)} |" in trained.stdout and "Saved bob" in trained.stdout
    assert server.served.body_bytes["twitter.zip"] < len(server.files["twitter.zip"]) / 4


async def cli_async(settings, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    """cli(), without blocking the event loop that runs the test's HTTP server."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        cwd=ROOT,
        env=cli_env(settings) | extra_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


def test_train_refuses_while_the_bot_owns_the_store(settings):
    """The CLI beside a running bot must not re-queue its live job or clean up its staging folders."""
    store = ModelStore(settings.models_dir)
    store.lock_maintenance()  # what the running bot holds
    try:
        staging = store.new_staging_dir(7, "carol")  # the bot is saving a model right now
        refused = cli(settings, "train", "--guild", "7", "--handle", "bob", "--file", str(TINY_CORPUS))
        assert refused.returncode == 2 and "Another tweetalike process" in refused.stderr
        assert cli(settings, "list", "--guild", "7").returncode == 0  # reading is fine meanwhile
        assert staging.is_dir()  # untouched by either
    finally:
        store.unlock_maintenance()
