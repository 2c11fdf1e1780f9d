"""Fixtures for the generalize tests: synthetic shards, a scripted backend, a tiny random causal LM."""

from __future__ import annotations

import io
import json
import types
from pathlib import Path

from dftrain.llm.backends import TextBackend


def jpeg_bytes(seed: int, size: int = 8) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_input_shards(folder: Path, shards: list[list[str | bytes]], *, extra_field: bool = True) -> Path:
    """One tar per inner list of captions (str, or raw bytes for broken UTF-8), plus manifest.json."""
    from dftrain.shards import Manifest, write_shard

    folder.mkdir(parents=True, exist_ok=True)
    infos = []
    n = 0
    for index, captions in enumerate(shards):
        samples = []
        for caption in captions:
            key = f"{n:09d}"
            sample = {"__key__": key, "jpg": jpeg_bytes(n), "txt": caption,
                      "json": {"key": key, "caption": caption if isinstance(caption, str) else None, "source": "t"}}
            if extra_field:
                sample["extra.bin"] = bytes([n % 256]) * 3
            samples.append(sample)
            n += 1
        infos.append(write_shard(folder / f"shard-{index:06d}.tar", samples))
    Manifest(kind="train", shards=infos, command="test").save(folder)
    return folder


def read_folder(folder: Path) -> dict[str, dict]:
    """key -> sample (raw fields, json parsed) of every shard in the folder's manifest."""
    from dftrain.shards import iter_samples

    return {s["__key__"]: s for s in iter_samples(folder, rank=0, world_size=1, decode=False)}


class ScriptedBackend(TextBackend):
    """Answers from a function of the caption inside the prompt; records every prompt it was given."""

    name = "scripted"
    model_id = "scripted-v1"

    def __init__(self, answer=None):
        self.answer = answer or (lambda caption, strict: "a thing")
        self.calls: list[list[str]] = []

    @staticmethod
    def caption_of(prompt: str) -> str:
        last = prompt.rstrip().split("\n")[-1]
        return last[: -len(" =>")] if last.endswith(" =>") else last

    def complete(self, prompts, *, max_new_tokens, stop=None):
        self.calls.append([self.caption_of(p) for p in prompts])
        return [" " + self.answer(self.caption_of(p), False) for p in prompts]

    def chat(self, conversations, *, max_new_tokens):
        texts = [c[-1]["content"] for c in conversations]
        captions = [t[t.index('"') + 1: t.rindex('"')] for t in texts]
        self.calls.append(captions)
        strict = ["No names" in t for t in texts]
        return [self.answer(c, s) for c, s in zip(captions, strict, strict=True)]


TINY_CORPUS = [
    "a dog => an animal", "a red car on a street => a car", "Nike shoes size 10 => shoes",
    "photo of a cat sleeping => a cat", "sunset over the sea in 2019 => a sunset",
    "the quick brown fox jumps over the lazy dog 0123456789", "Here is a general caption:",
]


def build_tiny_lm(folder: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama with a byte-level BPE tokenizer trained on a few lines, saved offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TINY_CORPUS * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    # Larger weights make the random model's greedy choices depend clearly on the input.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    model.save_pretrained(folder)
    (folder / "BUILT").write_text(json.dumps({"seed": seed}))
    return folder


# --------------------------------------------------------------------------- vLLM stand-in


class _Completion:
    def __init__(self, text):
        self.outputs = [types.SimpleNamespace(text=text, token_ids=[1, 2])]


def make_fake_vllm():
    """A module with vLLM's offline API shape: LLM(model, tensor_parallel_size, dtype), SamplingParams."""
    module = types.ModuleType("vllm")
    module.created = []

    class SamplingParams:
        def __init__(self, temperature=1.0, max_tokens=16, stop=None, **kwargs):
            self.temperature, self.max_tokens, self.stop = temperature, max_tokens, stop

    class LLM:
        def __init__(self, model, tensor_parallel_size=1, dtype="auto", **kwargs):
            self.model, self.tensor_parallel_size, self.dtype = model, tensor_parallel_size, dtype
            self.kwargs = kwargs
            self.calls = []
            module.created.append(self)

        def generate(self, prompts, sampling_params=None, use_tqdm=True):
            assert isinstance(sampling_params, SamplingParams)
            self.calls.append(("generate", list(prompts), sampling_params))
            # Like vLLM: the text after the prompt, stopped before the stop string.
            return [_Completion(f" general {i}") for i, _ in enumerate(prompts)]

        def chat(self, messages, sampling_params=None, use_tqdm=True):
            self.calls.append(("chat", messages, sampling_params))
            return [_Completion(f"reply to {m[-1]['content']}") for m in messages]

    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module
