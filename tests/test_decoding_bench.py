"""The decoding bench (bench/decoding.py) in miniature, so it cannot rot: a tiny model and persona,
each engine in its own worker process, interleaved; the floor and the step breakdown reported."""

from bench import decoding
from bot.core.devices import int8_engine
from bot.core.training.loop import train
from bot.core.training.recipe import TrainConfig
from tests.conftest import tiny_tweets


def test_the_decoding_bench_runs_each_engine_in_its_own_process(tmp_path, tiny_base_model):
    persona = train(tiny_tweets(), tmp_path / "persona", TrainConfig(base_model=tiny_base_model, max_steps=2))
    personas = [str(persona.output_dir)] * 2
    results = decoding.bench_decoding(tiny_base_model, personas, tmp_path, runs=2, new_tokens=4)
    rows = decoding.engines(results)
    assert decoding.BASELINE in rows and decoding.GENERIC in rows
    for row in rows.values():
        assert row["ms_per_step"] > 0 and row["rate"] > 0 and len(row["runs_ms_per_step"]) == 2
    if int8_engine() is not None:
        assert decoding.INT8 in rows
        assert results["floor"]["weights"] > 0 and results["floor"]["gb_per_s"] > 0
        breakdown = results["int8_breakdown"]
        assert breakdown["int8 matrix products"] > 0 and breakdown["sampling"] > 0
