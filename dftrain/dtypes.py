"""The one table from precision names to torch dtypes (train --precision, precompute/generate/
generalize --dtype): both spellings are accepted, fp16 / float16, bf16 / bfloat16, fp32 / float32."""

from __future__ import annotations

from dftrain.errors import ConfigError

_NAMES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


def torch_dtype(name: str, option: str = "dtype"):
    """torch.float32 / float16 / bfloat16 for a precision name; a ConfigError naming `--option` otherwise."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    if name not in _NAMES:
        raise ConfigError(f"unknown --{option} {name!r}; choose one of {', '.join(_NAMES)}")
    return getattr(torch, _NAMES[name])


def lower_precision_dtype(precision: str):
    """The dtype a model computes in under a training precision: bf16 / fp16, else float32."""
    return torch_dtype(precision if precision in ("bf16", "fp16") else "fp32", "precision")
