"""GGUF files as bases: a tiny Llama written as llama.cpp writes one (Q8_0 weights, byte-level BPE
in its metadata) is refused or taken at the edge, dequantized once into MODELS_DIR/.bases/, trained
on, named by file and sha256 in the registry and the card, and exported and imported back."""

import hashlib
import logging
import shutil

import gguf
import numpy as np
import pytest

from bot.core.errors import UserError
from bot.core.personas.modelcard import read_card
from bot.core.service import PersonaService
from bot.core.training import bases
from tests.conftest import tiny_tweets
from tests.test_cli import cli
from tests.tiny_model import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf")


def unreadable_quantization(path):
    """A GGUF whose one tensor is Q8_K, a type the gguf package cannot dequantize."""
    writer = gguf.GGUFWriter(str(path), "llama")
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_K]
    writer.add_tensor(
        "token_embd.weight", np.zeros((4, size), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_K
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def bad_files(tmp_path, tiny_gguf):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("this is a text file")
    return {
        "there is no such file": tmp_path / "missing.gguf",
        "it is not a GGUF file": not_gguf,
        "truncated": truncated,
        "its architecture `mamba9` is not one transformers reads": write_tiny_gguf(
            tmp_path / "other.gguf", architecture="mamba9"
        ),
        "its quantization type Q8_K cannot be dequantized": unreadable_quantization(tmp_path / "q8k.gguf"),
    }


async def test_unusable_files_are_refused_with_the_reason_and_nothing_is_queued(
    settings, tmp_path, tiny_gguf
):
    core = PersonaService(settings)
    await core.start(run_queue=False)
    try:
        for reason, path in bad_files(tmp_path, tiny_gguf).items():
            with pytest.raises(UserError) as refused:
                await core.trainings.submit(
                    guild_id=1, handle="alice", tweets=tiny_tweets(), stats={}, base_model=str(path)
                )
            assert path.name in str(refused.value) and reason in str(refused.value)
        assert await core.trainings.list(1) == []
        # BASE_MODEL is checked the same way when a request names no base.
        core.settings = settings.replace(base_model=str(tmp_path / "missing.gguf"))
        with pytest.raises(UserError, match="no such file"):
            await core.trainings.submit(guild_id=1, handle="alice", tweets=tiny_tweets(), stats={})
        assert await core.trainings.list(1) == []
    finally:
        await core.close()


def test_a_dequantization_killed_half_way_is_done_again(tmp_path, tiny_gguf):
    base = bases.inspect_gguf(tiny_gguf)
    assert base.sha256 == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    leftover = tmp_path / f".tmp-{base.folder_name}-dead"  # a killed process's temporary folder
    (leftover / "x").mkdir(parents=True)
    unfinished = tmp_path / base.folder_name  # a folder without its source file is not finished
    unfinished.mkdir()
    folder = bases.prepare_gguf(base, tmp_path)
    assert folder == unfinished and not leftover.exists()
    assert bases.gguf_source(folder) == {
        "file": tiny_gguf.name,
        "sha256": base.sha256,
        "architecture": "llama",
    }
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}


async def test_train_on_a_gguf_base_generate_export_and_import(settings, tmp_path, tiny_gguf, caplog):
    caplog.set_level(logging.INFO, logger="bot.core.training.bases")
    mirror = tmp_path / "mirror"
    core = PersonaService(settings.replace(base_model=str(tiny_gguf), hf_local_mirror=str(mirror)))
    await core.start()
    try:
        for handle in ("alice", "bob"):
            await core.trainings.submit(guild_id=1, handle=handle, tweets=tiny_tweets(), stats={})
            await core.trainings.wait_idle(timeout=240)
        label = f"{tiny_gguf.name} (sha256 {bases.inspect_gguf(tiny_gguf).sha256})"
        alice = await core.get_model(1, "alice")
        assert alice.base_model == label and (await core.get_model(1, "bob")).base_model == label
        # Dequantized once: the second training loaded the folder the first one wrote.
        assert sum("Dequantizing the GGUF base" in r.getMessage() for r in caplog.records) == 1
        dequantized = [p.name for p in core.store.bases_dir.iterdir() if p.name[0] != "."]
        assert [n for n in dequantized if n != "voice"] == [bases.inspect_gguf(tiny_gguf).folder_name]
        folder = core.store.resolve(alice.path)
        assert read_card(folder).base_model == label
        assert (
            "base_model_gguf:" in (folder / "README.md").read_text()
            and "sha256" in (folder / "README.md").read_text()
        )
        _, posts = await core.generate(1, "alice", "the", 2)
        assert len(posts) == 2

        shutil.copytree(folder, mirror / "someone" / "alice")  # export is the folder as it is
        imported = await core.import_model(2, "someone/alice")
        _, again = await core.generate(2, imported.handle, "the", 2)
        assert len(again) == 2
    finally:
        await core.close()


def test_the_cli_refuses_a_file_that_is_not_gguf(settings, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    from tests.conftest import TINY_CORPUS

    result = cli(
        settings,
        "train",
        "--guild",
        "7",
        "--handle",
        "a",
        "--file",
        str(TINY_CORPUS),
        "--base-model",
        str(fake),
    )
    assert result.returncode != 0
    assert (
        "`fake.gguf` cannot be used as a base model: it is not a GGUF file" in result.stderr + result.stdout
    )
    assert "a" not in cli(settings, "list", "--guild", "7").stdout.split()


def test_hub_ids_pass_and_gguf_paths_are_made_absolute(tiny_gguf, monkeypatch):
    assert bases.check_base("gpt2") == "gpt2"  # transformers says whether it loads, when training starts
    monkeypatch.chdir(tiny_gguf.parent)
    assert bases.check_base(tiny_gguf.name) == str(tiny_gguf.resolve())  # a worker finds it too
