"""`--engine-arg KEY=VALUE`: keyword arguments for `vllm.LLM`, checked before any model loads.

    parse_engine_args(["gpu_memory_utilization=0.85", "enable_prefix_caching=true", "quantization=fp8"])
    -> {"gpu_memory_utilization": 0.85, "enable_prefix_caching": True, "quantization": "fp8"}

A VALUE that parses as JSON is taken as JSON (numbers, true/false, null, lists, objects), anything else as
a string. When vLLM is installed, each KEY must be a parameter of `vllm.LLM` or a field of its
`EngineArgs` (where `LLM(**kwargs)` sends the rest): both are read from vLLM's source files with `ast`,
without importing vLLM (which needs a GPU and its own torch).
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Any

from dftrain.errors import ConfigError

# Set by their own options: --model, --tensor-parallel-size, --dtype.
OWN_OPTIONS = {"model": "--model", "tensor_parallel_size": "--tensor-parallel-size", "dtype": "--dtype"}
# Engine arguments that change speed or memory but not what greedy decoding writes: they stay out of the
# work key, so tuning them reuses finished work. Every other engine argument is part of the key.
RESOURCE_ONLY = frozenset({
    "gpu_memory_utilization", "enable_prefix_caching", "swap_space", "cpu_offload_gb", "max_num_seqs",
    "max_num_batched_tokens", "enforce_eager", "disable_log_stats", "block_size", "enable_chunked_prefill",
    "disable_custom_all_reduce", "pipeline_parallel_size", "distributed_executor_backend", "seed",
})


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_engine_args(items: list[str] | tuple[str, ...], known: set[str] | None = None) -> dict[str, Any]:
    """KEY=VALUE items -> {key: value}; ConfigError (one line) for a bad form, a repeated or unknown key.
    `known` defaults to the keys of the installed vLLM (None when it is not installed: form only)."""
    known = vllm_engine_keys() if known is None else known
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--engine-arg {item!r}: expected KEY=VALUE, e.g. gpu_memory_utilization=0.85")
        if key in OWN_OPTIONS:
            raise ConfigError(f"--engine-arg {key}: use {OWN_OPTIONS[key]} instead")
        if key in out:
            raise ConfigError(f"--engine-arg {key} is given twice")
        if known is not None and key not in known:
            raise ConfigError(f"--engine-arg {key}: not an argument of vllm.LLM or its EngineArgs "
                              f"(see docs/generalize.md for common ones)")
        out[key] = parse_value(value.strip())
    return out


def output_affecting(engine_args: dict[str, Any]) -> dict[str, Any]:
    """The engine arguments that can change the generated text (part of the work key)."""
    return {k: v for k, v in sorted(engine_args.items()) if k not in RESOURCE_ONLY}


def _vllm_root() -> Path | None:
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _class_node(path: Path, name: str) -> ast.ClassDef | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


def _init_parameters(node: ast.ClassDef) -> set[str]:
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        return set()
    args = init.args
    return {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)} - {"self"}


def _dataclass_fields(node: ast.ClassDef) -> set[str]:
    return {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def vllm_engine_keys(root: Path | None = None) -> set[str] | None:
    """Parameters of vllm.LLM plus the fields of vllm's EngineArgs, read from its source; None when vLLM
    is not installed or its layout is not the expected one."""
    root = root or _vllm_root()
    if root is None:
        return None
    llm = _class_node(root / "entrypoints" / "llm.py", "LLM")
    engine = _class_node(root / "engine" / "arg_utils.py", "EngineArgs")
    if llm is None or engine is None:
        return None
    keys = _init_parameters(llm) | _dataclass_fields(engine)
    return keys or None
