from pathlib import Path

import pytest

from bot.config import Settings, SettingsError, load_settings, render_env_example, render_settings_table

ROOT = Path(__file__).resolve().parents[1]


def test_defaults():
    s = load_settings({})
    assert (s.database_path, s.models_dir, s.base_model, s.training_workers) == (
        "data/bot.db",
        "models",
        "gpt2",
        1,
    )
    assert s.train_method == "lora" and s.generation_top_p == 0.95 and s.generation_max_new_tokens == 160
    with pytest.raises(SettingsError, match="DISCORD_TOKEN"):
        s.require_token()


@pytest.mark.parametrize(
    "env,name",
    [
        ({"TRAINING_WORKERS": "zero"}, "TRAINING_WORKERS"),
        ({"TRAINING_WORKERS": "0"}, "TRAINING_WORKERS"),
        ({"TRAIN_METHOD": "qlora"}, "TRAIN_METHOD"),
        ({"GENERATION_TOP_P": "2"}, "GENERATION_TOP_P"),
        ({"DEV_GUILD_ID": "abc"}, "DEV_GUILD_ID"),
        (
            {"GENERATION_MIN_NEW_TOKENS": "200", "GENERATION_MAX_NEW_TOKENS": "100"},
            "GENERATION_MIN_NEW_TOKENS",
        ),
    ],
)
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        load_settings(env)


def test_env_example_and_readme_list_every_setting():
    assert (ROOT / ".env.example").read_text() == render_env_example()
    assert render_settings_table() in (ROOT / "README.md").read_text()
    assert all(info.description for info in Settings.model_fields.values())


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ".venv/bin/python -m pytest -q"
    assert f"The test command is `{command}`" in readme
    # The suite's command, then the image built and run (.ci/image: slower, so after the suite).
    steps = [line for line in ci.strip().splitlines() if not line.startswith("#")]
    assert steps[-2:] == [command, "bash .ci/image"]


def test_epochs_default_by_method_unless_asked():
    from bot.core.training.recipe import default_epochs

    assert default_epochs("lora", 2000) == 2 and default_epochs("lora", 400) == 4
    assert default_epochs("full", 2000) == 4
    assert load_settings({}, dotenv=False).train_epochs is None  # resolved per method when queued
