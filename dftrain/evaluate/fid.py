"""FID over a local Inception network, and the weight-free `fd_embedded` fit figure.

Inception weights: a TorchScript file given by path, e.g. the `pt_inception-2015-12-05`
TorchScript that clean-fid and torchmetrics download (NVlabs' inception-2015-12-05.pt):
it takes a float tensor (N, 3, H, W) with values 0..255 and, called with
return_features=True, returns the 2048-d pool features. A TorchScript module without that
keyword (any feature extractor returning (N, D)) is called as model(x). Images are resized to
299 x 299 with PIL bicubic first, as clean-fid does. Nothing is downloaded: without a file,
FID is reported as null with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dftrain.errors import MissingDependencyError
from dftrain.evaluate.descriptors import _file_digest, load_torchscript
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
        self.cache_id = f"inception-{_file_digest(path)}"
        self._with_keyword = True
        self.dim = int(self.embed([Image.new("RGB", (INCEPTION_SIZE, INCEPTION_SIZE))]).shape[1])

    def _call(self, x):
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
            batch = np.stack([
                np.asarray(im.convert("RGB").resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.Resampling.BICUBIC),
                           dtype=np.float32)
                for im in images[start:start + self.batch_size]])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(self.device)
            with torch.inference_mode():
                feats = self._call(x)
            outs.append(feats.float().reshape(len(batch), -1).cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, getattr(self, "dim", 0)), np.float32)


def frechet_between(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two feature sets (rows = samples)."""
    mu_a, cov_a = gaussian_fit(features_a)
    mu_b, cov_b = gaussian_fit(features_b)
    return frechet_distance(mu_a, cov_a, mu_b, cov_b)
