"""The prior study's inference-time mitigations (Somepalli et al. 2023, github.com/somepago/DCR
sd_mitigation.py / diff_inference.py), as pure functions used by `dftrain generate`.

- Gaussian noise on the prompt embedding (their `Newpipe`, `--rand_noise_lam 0.1` in their README):
  e' = e + sigma * n, n ~ N(0, I), on the text-encoder states of the prompt AND of the negative
  (empty) prompt, as their override of `_encode_prompt` noised the concatenation of both.
- Prompt augmentation (`--rand_augs`, `--rand_aug_repeats`, 4 in sd_mitigation.py, 2 in
  diff_inference.py): `rand_numb_add` inserts random integers in [0, 100000), `rand_word_add`
  random single BPE tokens (decoded), `rand_word_repeat` words picked from the prompt, each at a
  random position of the space-split prompt.

Each image draws from its own generators, seeded from the image's seed, so an image depends on its
own seed only and its initial latent noise is the same with or without a mitigation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from dftrain.errors import ConfigError
from dftrain.train import mitigations

PROMPT_AUGMENTATIONS = ("rand_numb_add", "rand_word_add", "rand_word_repeat")
PROMPT_NOISE_SIGMA = 0.1  # their README's inference command
AUGMENT_REPEATS = 4  # sd_mitigation.py, their script for the inference-time mitigations
NOISE_SEED_OFFSET = 0x5EED  # the noise generator of an image is seeded apart from its latent generator


def check_augmentation(style: str | None, repeats: int) -> None:
    if style is not None and style not in PROMPT_AUGMENTATIONS:
        raise ConfigError(f"--prompt-augment must be one of {', '.join(PROMPT_AUGMENTATIONS)}, got {style!r}")
    if repeats < 1:
        raise ConfigError(f"--prompt-augment-repeats must be >= 1, got {repeats}")


def augment_prompt(prompt: str, style: str, repeats: int, seed: int, *, id_limit: int | None = None,
                   decode: mitigations.Decode | None = None) -> str:
    """The prompt with `repeats` random numbers / tokens / own words inserted (seeded by `seed`)."""
    rng = random.Random(f"prompt-augment-{seed}")
    if style == "rand_numb_add":
        return mitigations.random_number_addition(prompt, rng, n_numbers=repeats)
    if style == "rand_word_add":
        if id_limit is None or decode is None:
            raise ValueError("rand_word_add needs the tokenizer's id limit and decoder")
        return mitigations.random_token_addition(prompt, 1.0, rng, id_limit=id_limit, decode=decode,
                                                 n_tokens=repeats)
    if style == "rand_word_repeat":
        return mitigations.word_repetition(prompt, 1.0, rng, n_words=repeats)
    raise ConfigError(f"unknown prompt augmentation {style!r}")


def noise_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(seed + NOISE_SEED_OFFSET) for seed in seeds]


def noisy_embeddings(embeds: torch.Tensor, sigma: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Row i: embeds[i] + sigma * n_i, n_i ~ N(0, I) drawn from generators[i] (on the CPU, in fp32)."""
    if len(generators) != embeds.shape[0]:
        raise ValueError(f"{len(generators)} generators for {embeds.shape[0]} embeddings")
    noise = torch.stack([torch.randn(embeds.shape[1:], generator=g, dtype=torch.float32) for g in generators])
    return embeds + sigma * noise.to(device=embeds.device, dtype=embeds.dtype)
