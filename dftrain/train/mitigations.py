"""Baseline mitigations from the prior study (Somepalli et al. 2023), as pure functions.

Embedding-level (tensors): Gaussian noise on caption embeddings, embedding mixup.
Text-level (strings; the caller passes a seeded random.Random): one random caption of
several, random caption replacement, random word insertion, word repetition.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch


def gaussian_embedding_noise(states: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """c' = c + sigma * n, n ~ N(0, I)."""
    noise = torch.randn(states.shape, generator=generator, dtype=torch.float32, device="cpu")
    return states + sigma * noise.to(device=states.device, dtype=states.dtype)


def sample_mixup_lambda(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws of lambda ~ Beta(alpha, 1), by inverse CDF: lambda = U^(1/alpha)."""
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return u.pow(1.0 / alpha).float()


def embedding_mixup(states: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """c'_i = lam_i c_i + (1 - lam_i) c_partner[i]; states [B, T, D], lam [B], partner [B] (indices)."""
    lam = lam.to(device=states.device, dtype=states.dtype).view(-1, *([1] * (states.dim() - 1)))
    return lam * states + (1.0 - lam) * states[partner.to(states.device)]


def mixup_partners(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of the batch: each example's mixup partner."""
    return torch.randperm(n, generator=generator)


def choose_one_caption(captions: Sequence[str], rng: random.Random) -> str:
    """One caption drawn uniformly from the several of an image."""
    if not captions:
        raise ValueError("no captions to choose from")
    return captions[rng.randrange(len(captions))]


def random_caption_replacement(caption: str, vocabulary: Sequence[str], p: float, rng: random.Random) -> str:
    """With probability p the caption is replaced by random vocabulary words (as many as it had)."""
    if vocabulary and rng.random() < p:
        n_words = max(1, len(caption.split()))
        return " ".join(vocabulary[rng.randrange(len(vocabulary))] for _ in range(n_words))
    return caption


def vocabulary_from_tokenizer(tokenizer, min_length: int = 3) -> list[str]:
    """Whole alphabetic words of a CLIP-style BPE vocabulary (tokens ending in </w>), sorted."""
    words = set()
    for token in tokenizer.get_vocab():
        word = token[:-4] if token.endswith("</w>") else None
        if word and word.isalpha() and len(word) >= min_length:
            words.add(word)
    return sorted(words)


def random_word_insertion(caption: str, vocabulary: Sequence[str], n_words: int, rng: random.Random) -> str:
    """Insert `n_words` random vocabulary words at random positions."""
    words = caption.split()
    for _ in range(n_words if vocabulary else 0):
        words.insert(rng.randrange(len(words) + 1), vocabulary[rng.randrange(len(vocabulary))])
    return " ".join(words)


def word_repetition(caption: str, n_repeats: int, rng: random.Random) -> str:
    """Repeat `n_repeats` randomly chosen words of the caption in place (word -> word word)."""
    words = caption.split()
    for _ in range(n_repeats if words else 0):
        i = rng.randrange(len(words))
        words.insert(i, words[i])
    return " ".join(words)
