"""What the paper draws for each object of the dual fusion, as pure functions.

- the class label k: a random synonym of the class per draw (Tiny-ImageNet's words.txt lists
  several per class, comma-separated), or always the first (`--object-label first`);
- the object image: flipped left-right with probability 1/2, like the training images;
- the object latent: a sample of the VAE posterior, mean + std * noise, like the training latents
  (`--object-latent mean` keeps the mean).

The random numbers come from the batch builder's seeded generator, which checkpoints save and resume
restores, so a resumed run draws what the uninterrupted run drew.
"""

from __future__ import annotations

import torch

OBJECT_LABEL_MODES = ("synonym", "first")
OBJECT_LATENT_MODES = ("sample", "mean")


def synonym_choices(counts: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """For each draw, which of its class's `counts` synonyms: floor(u * count), uniform in 0..count-1."""
    return torch.minimum((uniforms * counts).long(), counts - 1)  # u < 1, but guard against rounding


def posterior_sample(mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One sample of the VAE's diagonal Gaussian posterior: mean + std * eps."""
    return mean + std * noise


def coin_flips(n: int, generator: torch.Generator) -> torch.Tensor:
    """n fair coin flips (True: mirror the image), from the generator."""
    return torch.rand(n, generator=generator) < 0.5


def mirrored(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Images [N, C, H, W] with those where `flip` is True mirrored left-right."""
    return torch.where(flip.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)
