"""The prior study's mitigations (Somepalli et al. 2023, github.com/somepago/DCR), as pure functions.

Their published semantics, which are the defaults here:
- Gaussian noise on the caption embeddings: c' = c + sigma * n (`--rand_noise_lam`).
- Embedding mixup: ONE lambda ~ Beta(alpha, 1) per batch, c'_i = lam c_i + (1 - lam) c_perm(i)
  (`--mixup_noise_lam`); one lambda per example is kept as an option (`per_sample`).
- One random caption of several (`allcaps`).
- The text interventions fire with probability p per sample (`--trainspecial_prob`, 0.1):
  random caption replacement (`randrepl`): the caption becomes 4 random BPE tokens, decoded;
  random word addition (`randwordadd`): 2 random BPE tokens, each decoded and inserted at a random
  position; word repetition (`wordrepeat`): 2 words picked from the caption, each inserted at a
  random position (anywhere, not next to itself).
A position is drawn uniformly from the len(words) + 1 gaps of the space-split caption, as their
`insert_rand_word` does. Random token ids are drawn uniformly below the first special token
(CLIP: 49,406; theirs drew below 49,400, i.e. the same ids but 6 rare merges).

The inference-time mitigations (prompt noise, random numbers, random tokens, word repetition
added to the prompt) are the same functions with p = 1; see dftrain/evaluate/generate.py.
Randomness: the caller passes a seeded random.Random (text) or torch.Generator (tensors).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

# The published parameters.
TEXT_MITIGATION_P = 0.1  # trainspecial_prob
REPLACEMENT_TOKENS = 4  # randrepl: np.random.randint(49400, size=4)
ADDED_TOKENS = 2  # randwordadd: two single-token insertions
REPEATED_WORDS = 2  # wordrepeat: two picked words
RANDOM_NUMBER_LIMIT = 100_000  # rand_numb_add: np.random.choice(100000)

Decode = Callable[[list[int]], str]


# ---- embeddings ---------------------------------------------------------------------------
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


def mixup_lambdas(alpha: float, n: int, generator: torch.Generator, *, per_sample: bool = False) -> torch.Tensor:
    """The lambda of each of n examples: one draw shared by the batch (theirs), or one each."""
    if per_sample:
        return sample_mixup_lambda(alpha, n, generator)
    return sample_mixup_lambda(alpha, 1, generator).expand(n).clone()


def embedding_mixup(states: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """c'_i = lam_i c_i + (1 - lam_i) c_partner[i]; states [B, T, D], lam [B], partner [B] (indices)."""
    lam = lam.to(device=states.device, dtype=states.dtype).view(-1, *([1] * (states.dim() - 1)))
    return lam * states + (1.0 - lam) * states[partner.to(states.device)]


def mixup_partners(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of the batch: each example's mixup partner."""
    return torch.randperm(n, generator=generator)


# ---- text ---------------------------------------------------------------------------------
def choose_one_caption(captions: Sequence[str], rng: random.Random) -> str:
    """One caption drawn uniformly from the several of an image."""
    if not captions:
        raise ValueError("no captions to choose from")
    return captions[rng.randrange(len(captions))]


def fires(p: float, rng: random.Random) -> bool:
    """True with probability p (one uniform draw, taken whether it fires or not)."""
    return rng.random() < p


def insert_at_random_position(caption: str, word: str, rng: random.Random) -> str:
    """`word` inserted into one of the len(words) + 1 gaps of the space-split caption, uniformly."""
    words = caption.split(" ")
    words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def random_token_ids(id_limit: int, n: int, rng: random.Random) -> list[int]:
    """n token ids drawn uniformly from [0, id_limit)."""
    if id_limit < 1:
        raise ValueError(f"id_limit must be >= 1, got {id_limit}")
    return [rng.randrange(id_limit) for _ in range(n)]


def random_caption_replacement(caption: str, p: float, rng: random.Random, *, id_limit: int, decode: Decode,
                               n_tokens: int = REPLACEMENT_TOKENS) -> str:
    """With probability p, the caption becomes `n_tokens` random tokens decoded together."""
    if fires(p, rng):
        return decode(random_token_ids(id_limit, n_tokens, rng))
    return caption


def random_token_addition(caption: str, p: float, rng: random.Random, *, id_limit: int, decode: Decode,
                          n_tokens: int = ADDED_TOKENS) -> str:
    """With probability p, `n_tokens` random tokens, each decoded alone, inserted at random positions."""
    if fires(p, rng):
        for _ in range(n_tokens):
            caption = insert_at_random_position(caption, decode(random_token_ids(id_limit, 1, rng)), rng)
    return caption


def word_repetition(caption: str, p: float, rng: random.Random, *, n_words: int = REPEATED_WORDS) -> str:
    """With probability p, `n_words` words picked from the caption (with replacement), each inserted
    at a random position of the growing caption."""
    if fires(p, rng) and caption.strip():
        words = caption.split(" ")
        for _ in range(n_words):
            caption = insert_at_random_position(caption, words[rng.randrange(len(words))], rng)
    return caption


def random_number_addition(caption: str, rng: random.Random, *, n_numbers: int = REPEATED_WORDS,
                           limit: int = RANDOM_NUMBER_LIMIT) -> str:
    """`n_numbers` random integers in [0, limit) inserted at random positions (inference only)."""
    for _ in range(n_numbers):
        caption = insert_at_random_position(caption, str(rng.randrange(limit)), rng)
    return caption


def token_id_limit(tokenizer) -> int:
    """Ids below the first special token (CLIP: 49,406 of 49,408): the ids a random token is drawn from."""
    specials = [i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id) if i is not None]
    return min(specials) if specials else len(tokenizer)


def token_decoder(tokenizer) -> Decode:
    """ids -> text, as the tokenizer decodes them."""
    return lambda ids: tokenizer.decode(ids)
