"""Backends: the transformers decoder (tiny random Llama), the vLLM adapter (stand-in module), load_backend."""

import sys

import pytest
from generalize_helpers import build_tiny_lm, make_fake_vllm

from dftrain.errors import ConfigError, MissingDependencyError
from dftrain.llm.backends import (
    TextBackend,
    TransformersBackend,
    VllmBackend,
    cut_at_stop,
    load_backend,
)

PROMPTS = ["a dog => an animal\nphoto of a cat sleeping =>", "a dog => an animal\nred car =>",
           "a dog => an animal\nNike shoes size 10 on a street in 2019 =>"]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="module")
def tiny_backend(tiny_lm):
    return load_backend("transformers", model=str(tiny_lm))


def reference_greedy(backend, prompt, max_new_tokens):
    """Plain full-sequence greedy decoding, no cache, no batching: what the fast path must match."""
    import torch

    ids = backend.tokenizer(prompt)["input_ids"]
    out = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = backend.model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            token = int(logits.argmax())
            if token in backend.eos_ids:
                break
            out.append(token)
    return backend.tokenizer.decode(out, skip_special_tokens=True)


def test_transformers_backend_matches_plain_greedy_at_any_batch_size(tiny_backend):
    assert isinstance(tiny_backend, TextBackend) and tiny_backend.name == "transformers"
    expected = [reference_greedy(tiny_backend, p, 8) for p in PROMPTS]
    assert any(expected), "the tiny model should produce some text"
    batched = tiny_backend.complete(PROMPTS, max_new_tokens=8)
    one_by_one = [tiny_backend.complete([p], max_new_tokens=8)[0] for p in PROMPTS]
    assert batched == one_by_one == expected
    # The shared few-shot line was cached once and reused.
    assert tiny_backend._prefix_tokens and len(tiny_backend._prefix_tokens) > 3


def test_prefix_cache_off_gives_the_same_text(tiny_lm, tiny_backend):
    plain = TransformersBackend(tiny_lm, prefix_cache=False)
    assert plain.complete(PROMPTS, max_new_tokens=6) == tiny_backend.complete(PROMPTS, max_new_tokens=6)
    assert plain._prefix_tokens == ()


def test_stop_strings_cut_the_text(tiny_backend):
    full = tiny_backend.complete(PROMPTS, max_new_tokens=10)
    for text, stopped in zip(full, tiny_backend.complete(PROMPTS, max_new_tokens=10, stop=["a"]), strict=True):
        assert stopped == text.split("a")[0]
    assert cut_at_stop("ab\ncd", ["\n", "c"]) == "ab"
    assert cut_at_stop("abc", None) == "abc"


def test_chat_uses_the_chat_template(tiny_backend):
    conversations = [[{"role": "user", "content": "red car"}], [{"role": "user", "content": "a dog"}]]
    replies = tiny_backend.chat(conversations, max_new_tokens=5)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    assert replies[0] == reference_greedy(
        tiny_backend, tiny_backend.tokenizer.apply_chat_template(conversations[0], add_generation_prompt=True,
                                                                 tokenize=False), 5)
    assert tiny_backend.chat([], max_new_tokens=5) == [] and tiny_backend.complete([], max_new_tokens=5) == []


def test_load_backend_errors(tmp_path):
    with pytest.raises(ConfigError):
        load_backend("llama.cpp")
    with pytest.raises(MissingDependencyError):
        load_backend("transformers", model=str(tmp_path / "nope"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ConfigError):
        load_backend("transformers", model=str(tmp_path / "weights.bin"))


# --------------------------------------------------------------------------- vLLM stand-in


def test_vllm_adapter_with_a_stand_in_module(monkeypatch, tmp_path):
    fake = make_fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    backend = load_backend("vllm", model=str(tmp_path), tensor_parallel_size=4, dtype="bfloat16", require_gpu=False)
    assert isinstance(backend, VllmBackend) and backend.name == "vllm" and backend.model_id == tmp_path.name
    llm = fake.created[-1]
    assert (llm.model, llm.tensor_parallel_size, llm.dtype) == (str(tmp_path), 4, "bfloat16")

    assert backend.complete(["a =>", "b =>"], max_new_tokens=7, stop=["\n"]) == [" general 0", " general 1"]
    kind, prompts, params = llm.calls[-1]
    assert kind == "generate" and prompts == ["a =>", "b =>"]
    assert (params.temperature, params.max_tokens, params.stop) == (0, 7, ["\n"])

    replies = backend.chat([[{"role": "user", "content": "x"}]], max_new_tokens=5)
    assert replies == ["reply to x"]
    kind, _, params = llm.calls[-1]
    assert kind == "chat" and (params.temperature, params.max_tokens) == (0, 5)


def test_vllm_missing_or_no_gpu_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(MissingDependencyError, match="vLLM"):
        load_backend("vllm", model=str(tmp_path))
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm())
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(MissingDependencyError, match="GPU"):
            load_backend("vllm", model=str(tmp_path))
    with pytest.raises(ConfigError, match="GGUF"):
        load_backend("vllm", model=str(tmp_path / "m.gguf"), require_gpu=False)
