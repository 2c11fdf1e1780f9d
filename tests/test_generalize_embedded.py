"""The embedded SmolLM2-135M model for real: a handful of captions, batch-size invariance, the stage."""

import pytest
from generalize_helpers import read_folder, write_input_shards

from dftrain.generalize.cleaning import validate
from dftrain.generalize.generalizer import Generalizer
from dftrain.generalize.prompts import make_prompt_spec
from dftrain.generalize.stage import generalize_shards
from dftrain.llm.backends import load_backend

CAPTIONS = [
    "Canon EOS 5D Mark IV DSLR camera body with 24-70mm lens",
    "A golden retriever puppy named Buddy playing in a park in Seattle, 2018",
    "Starbucks Pumpkin Spice Latte cup on a wooden table, autumn 2020",
    "Lego Star Wars Millennium Falcon set 75257",
    "Woman in a yellow raincoat walking her corgi in the rain",
    "Sunset over the Golden Gate Bridge in San Francisco, HD wallpaper",
]


@pytest.fixture(scope="module")
def embedded():
    try:
        return load_backend("embedded")
    except Exception as exc:  # the wheel is part of `make setup`; say clearly why the test cannot run
        pytest.fail(f"embedded model unavailable: {exc}")


@pytest.mark.slow
def test_embedded_model_generalizes_and_is_batch_invariant(embedded, tmp_path):
    assert embedded.name == "embedded" and embedded.model_id == "SmolLM2-135M-Instruct"
    spec = make_prompt_spec("embedded")
    prompts = spec.completion_prompts(CAPTIONS)
    batched = embedded.complete(prompts, max_new_tokens=16, stop=["\n"])
    single = [embedded.complete([p], max_new_tokens=16, stop=["\n"])[0] for p in prompts[:3]]
    assert batched[:3] == single  # fp32 greedy: the batch a caption is in does not change its output
    usable = [c for raw, orig in zip(batched, CAPTIONS, strict=True)
              for c, reason in [validate(raw, orig, max_words=4)] if reason is None]
    assert len(usable) >= 4, batched  # measured: ~80% of raw outputs are usable
    assert all(len(c.split()) <= 4 for c in usable)

    results = Generalizer(embedded, spec, batch_size=4).generalize(CAPTIONS)
    for original, result in zip(CAPTIONS, results, strict=True):
        assert result.caption and len(result.caption.split()) <= 4
        assert result.caption.lower() != original.lower()
        assert not any(ch.isdigit() for ch in result.caption)

    in_dir = write_input_shards(tmp_path / "in", [CAPTIONS[:3], CAPTIONS[3:]])
    report = generalize_shards(in_dir, tmp_path / "out", backend_instance=embedded, score="off", progress=False,
                               batch_size=4)
    assert report.manifest_written and report.samples_out == len(CAPTIONS)
    out = read_folder(tmp_path / "out")
    assert {s["json"]["llm"]["model"] for s in out.values()} == {"SmolLM2-135M-Instruct"}
    assert {s["json"]["orig_caption"] for s in out.values()} == set(CAPTIONS)
