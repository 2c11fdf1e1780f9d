"""FID over a local Inception network, and the weight-free `fd_embedded` fit figure.

Inception weights: a TorchScript file given by path, e.g. NVlabs' inception-2015-12-05.pt, the
file clean-fid and torchmetrics download. Preprocessing follows clean-fid's "clean" mode, so that
the numbers can be compared with clean-fid's: each RGB channel is resized to 299 x 299 as a float
image with PIL bicubic and clipped to 0..255, without rounding back to 8 bits (clean_resize);
then, as clean-fid's InceptionV3W does, the network's `layers` run on (x - 128) / 128 and give
the 2048-d pool features. A TorchScript module without `layers` is called as
model(x, return_features=True), else model(x) (any feature extractor returning (N, D)).
Nothing is downloaded: without a file, FID is reported as null with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dftrain.errors import MissingDependencyError
from dftrain.evaluate.descriptors import load_torchscript, weights_digest
from dftrain.evaluate.metrics import frechet_distance, gaussian_fit

INCEPTION_SIZE = 299


class InceptionFeatures:
    """Feature extractor with the descriptor interface (name, dim, cache_id, embed); not normalised."""

    name = "inception"

    def __init__(self, path: str | Path, device: str | None = None, batch_size: int = 50) -> None:

        path = Path(path)
        if not path.is_file():
            raise MissingDependencyError(f"Inception TorchScript file not found: {path}")
        self.model, self.device = load_torchscript(path, device, "Inception TorchScript")
        self.batch_size = batch_size
        self.cache_id = f"inception-{weights_digest(path)}"
        self._with_keyword = True
        self.dim = int(self.embed([Image.new("RGB", (INCEPTION_SIZE, INCEPTION_SIZE))]).shape[1])

    def _call(self, x):
        if hasattr(self.model, "layers"):  # inception-2015-12-05.pt: its pool features, as clean-fid calls them
            return self.model.layers.forward((x - 128) / 128)
        if self._with_keyword:
            try:
                return self.model(x, return_features=True)
            except (RuntimeError, TypeError):
                self._with_keyword = False  # a plain feature extractor
        return self.model(x)

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        outs = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([clean_resize(im) for im in images[start:start + self.batch_size]])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(self.device)
            with torch.inference_mode():
                feats = self._call(x)
            outs.append(feats.float().reshape(len(batch), -1).cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, getattr(self, "dim", 0)), np.float32)


def clean_resize(img: Image.Image, size: int = INCEPTION_SIZE) -> np.ndarray:
    """clean-fid's "clean" resize: every channel resized as a float32 image with PIL bicubic and
    clipped to 0..255, kept as float (no rounding to uint8). (size, size, 3) float32."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c])).resize(
        (size, size), Image.Resampling.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.float32)


def frechet_between(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two feature sets (rows = samples)."""
    mu_a, cov_a = gaussian_fit(features_a)
    mu_b, cov_b = gaussian_fit(features_b)
    return frechet_distance(mu_a, cov_a, mu_b, cov_b)
