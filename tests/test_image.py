"""The image users run (the Dockerfile, as docker-compose.yml builds it), run as users run it.

`.ci/image` builds `tweetalike:latest` and `tweetalike:scale` with podman and then runs
`pytest -m image tests/test_image.py` (deselected from the default run: it needs the images).
The bot container talks to the local Discord-compatible server on the host network, with a tiny
base model on its /data volume; the worker container to the test PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from bot.core.training.checkpoint import checkpoint_step
from tests import test_scale_workers as scale
from tests.discord_env import populate
from tests.localdiscord import LocalDiscord
from tests.test_scale_workers import CORPUS, finished, impersonate, train, worker_env

pytestmark = pytest.mark.image
# The scale tests' fixtures: the bot in this process on a fresh PostgreSQL database.
pg_url, scale_env, storage = scale.pg_url, scale.scale_env, scale.storage

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "tweetalike:latest"  # docker-compose.yml's images (tests/test_container.py checks)
SCALE_IMAGE = "tweetalike:scale"
DATA = "/data"  # the volume: the database and the model store
MODELS = "/data/models"  # the scale-out services share only the model store
UID = 10001
# A training long enough to be killed half-way, saving a checkpoint after every step.
SLOW_TRAINING = {
    "TRAIN_EPOCHS": "20",
    "TRAIN_MAX_STEPS": "300",
    "TRAIN_BATCH_SIZE": "1",
    "TRAIN_BLOCK_SIZE": "16",
    "TRAIN_CHECKPOINT_SECONDS": "0.000001",
    "TORCH_THREADS": "1",
}


def podman(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    env = os.environ.copy()
    env.setdefault("CONTAINERS_CONF", str(ROOT / ".ci" / "containers.conf"))
    result = subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def require(image: str) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (.ci/image installs it and builds the images)")
    if podman("image", "exists", image, check=False).returncode != 0:
        pytest.skip(f"the image {image} is not built (.ci/image builds it)")


def volume(folder: Path) -> Path:
    """A host folder for a volume, owned by the image's user as a named volume would be."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, UID, UID)
    else:  # rootless podman: the image's user is a subordinate uid
        podman("unshare", "chown", "-R", f"{UID}:{UID}", str(folder))
    return folder


class Container:
    """`podman run -d` on the host network; removed when the test ends."""

    def __init__(self, image: str, env: dict[str, str], volumes: dict[Path, str], command=()):
        self.name = f"tweetalike-test-{uuid.uuid4().hex[:8]}"
        args = ["run", "--detach", "--name", self.name, "--network", "host"]
        for source, target in volumes.items():
            args += ["--volume", f"{source}:{target}"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        podman(*args, image, *command)

    def state(self, field: str) -> str:
        return podman("inspect", "--format", "{{.State." + field + "}}", self.name).stdout.strip()

    def running(self) -> bool:
        return self.state("Running") == "true"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self) -> int:
        """SIGTERM, as `docker stop` sends it; the exit status."""
        podman("stop", "--time", "60", self.name, timeout=90)
        return int(self.state("ExitCode"))

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture
def containers():
    started: list[Container] = []

    def start(*args, **kwargs) -> Container:
        started.append(Container(*args, **kwargs))
        return started[-1]

    yield start
    for container in started:
        container.remove()


async def until(condition, what, container: Container | None = None, timeout: float = 180):
    """Poll `condition` (in a thread: the local Discord server keeps serving meanwhile)."""
    for _ in range(int(timeout / 0.2)):
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if container is not None and not await asyncio.to_thread(container.running):
            break
        await asyncio.sleep(0.2)
    what = what() if callable(what) else what
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{container.logs()}" if container else ""))


def test_the_image_runs_as_its_own_user_and_needs_a_token():
    require(IMAGE)
    assert podman("run", "--rm", "--entrypoint", "id", IMAGE, "-u").stdout.strip() == str(UID)
    bare = podman("run", "--rm", IMAGE, check=False)
    assert bare.returncode == 2 and "DISCORD_TOKEN" in bare.stdout + bare.stderr
    imports = podman(
        "run", "--rm", IMAGE, "python", "-c", "import bot.discord.client, torch; print(torch.__version__)"
    )
    assert imports.stdout.strip().endswith("+cpu")


async def test_the_bot_trains_answers_is_healthy_and_a_killed_container_resumes(
    tmp_path, tiny_base_model, containers
):
    require(IMAGE)
    data = tmp_path / "data"
    shutil.copytree(tiny_base_model, data / "base-model")
    volume(data)
    async with LocalDiscord() as server:
        ids = populate(server)
        guild, admin, channel = ids["guild"], ids["admin"], server.general(ids["guild"])
        env = {
            "DISCORD_TOKEN": server.token,
            "DISCORD_API_BASE": server.api_base,
            "DISCORD_GATEWAY_URL": server.gateway_url,
            "BASE_MODEL": f"{DATA}/base-model",
            "HF_HUB_OFFLINE": "1",
            "GENERATION_MAX_NEW_TOKENS": "24",
            "GENERATION_MIN_NEW_TOKENS": "4",
            "IMPERSONATE_COOLDOWN_SECONDS": "0",
        }

        async def start_bot(**extra: str) -> Container:
            server.commands.clear()
            bot = containers(IMAGE, env | extra, {data: DATA})
            await until(lambda: server.commands and server.live_sessions(), "the bot to connect", bot)
            return bot

        bot = await start_bot(**SLOW_TRAINING)
        health = await until(
            lambda: podman("healthcheck", "run", bot.name, check=False).returncode == 0,
            "the health check to pass",
            bot,
        )
        assert health and bot.state("Health.Status") == "healthy"

        reply = await server.slash(guild, admin, "train new", handle="alice", file=CORPUS)
        await reply.answered(timeout=60)
        job = data / "models" / ".checkpoints" / "job-1"
        saved = await until(
            lambda: (checkpoint_step(job) or 0) >= 2 and checkpoint_step(job),
            lambda: f"a checkpoint in {job} (the bot answered {reply.text()!r})",
            bot,
        )
        podman("kill", bot.name)  # SIGKILL, mid-training
        assert bot.state("Status") == "exited" or not bot.running()

        # A new container on the same volume resumes the job and tells the requester.
        bot = await start_bot(**SLOW_TRAINING | {"TRAIN_CHECKPOINT_SECONDS": "3600"})
        told = await server.wait_for_message(
            channel, lambda m: "interrupted by a restart" in (m["content"] or ""), timeout=120
        )
        assert f"<@{admin}>" in told["content"]
        resumed = re.search(r"resumes from its checkpoint at step (\d+)", told["content"])
        assert resumed and int(resumed.group(1)) >= saved, told["content"]
        done = await server.wait_for_message(
            channel, lambda m: "`alice` is ready" in (m["content"] or ""), timeout=300
        )
        assert f"<@{admin}>" in done["content"]

        answer = await server.slash(guild, ids["member"], "impersonate", handle="alice", count=2)
        await answer.wait(lambda i: i.original and i.original.get("embeds"), timeout=120)
        assert len(answer.original["embeds"]) == 2
        assert await asyncio.to_thread(bot.stop) == 0  # `docker stop`: a clean exit
    assert (data / "bot.db").is_file() and (data / "models" / str(guild) / "alice").is_dir()


async def test_the_scale_image_runs_a_worker_that_trains_for_the_bot(
    settings, scale_env, pg_url, storage, tmp_path, tiny_base_model, containers
):
    """The bot (in this process, on PostgreSQL) queues the training; `python -m bot.worker` in the
    SCALE=1 image takes it, trains it and hands the persona back through the database."""
    require(SCALE_IMAGE)
    models = volume(tmp_path / "worker-models")
    base = Path(tiny_base_model)  # mounted read-only at the path the bot's jobs name
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    worker = containers(
        SCALE_IMAGE,
        worker_env(settings, pg_url),
        {models: MODELS, base: f"{base}:ro"},
        ["python", "-m", "bot.worker"],
    )
    await train(scale_env)
    done = await finished(scale_env, "alice", timeout=300)
    assert "is ready" in done["content"], worker.logs()
    job = (await storage.jobs.list(scale_env.guild))[0]
    assert job.state == "done" and job.worker, job
    answer = await impersonate(scale_env, "alice")
    assert len(answer.original["embeds"]) == 2
    assert await asyncio.to_thread(worker.stop) == 0
