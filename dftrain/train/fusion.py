"""Dual fusion (arXiv 2309.07254): pure functions on latents, embeddings and token ids.

- latent fusion:    z' = (1 - w_lat) * z + w_lat * z_o
- caption embed_add: c' = (1 - w_emb) * E(caption) + w_emb * E(" with " + k)
- caption tail_add:  the tokens of " with k" appended to the caption's tokens before encoding
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FUSION_MODES = ("none", "latent", "caption", "dual")
CAPTION_FUSION_MODES = ("embed_add", "tail_add")


def uses_latent_fusion(mode: str) -> bool:
    return mode in ("latent", "dual")


def uses_caption_fusion(mode: str) -> bool:
    return mode in ("caption", "dual")


def object_phrase(class_name: str) -> str:
    """The text fused into a caption for an object of class `class_name`: " with <k>"."""
    return f" with {class_name.strip()}"


def latent_fusion(z: torch.Tensor, z_object: torch.Tensor, w_lat: float) -> torch.Tensor:
    """z' = (1 - w_lat) z + w_lat z_o (same shape; w_lat in [0, 1])."""
    if z.shape != z_object.shape:
        raise ValueError(f"latent shapes differ: {tuple(z.shape)} vs {tuple(z_object.shape)}")
    return (1.0 - w_lat) * z + w_lat * z_object.to(z.dtype)


def embed_add(caption_states: torch.Tensor, object_states: torch.Tensor, w_emb: float) -> torch.Tensor:
    """c' = (1 - w_emb) E(caption) + w_emb E(" with " + k), token position by token position."""
    if caption_states.shape != object_states.shape:
        raise ValueError(
            f"embedding shapes differ: {tuple(caption_states.shape)} vs {tuple(object_states.shape)}"
        )
    return (1.0 - w_emb) * caption_states + w_emb * object_states.to(caption_states.dtype)


def tail_add_ids(
    caption_ids: Sequence[int],
    tail_ids: Sequence[int],
    max_length: int,
    bos_id: int | None,
    eos_id: int,
    pad_id: int,
) -> list[int]:
    """Token ids of caption + tail, re-framed as [bos] caption tail eos pad... of `max_length`.

    `caption_ids` and `tail_ids` are the tokenizer's ids WITHOUT special tokens. When the
    caption is too long, the caption (not the tail) is truncated so that the object words
    always survive, as in the paper's "append to the end" fusion.
    """
    head = [bos_id] if bos_id is not None else []
    room = max_length - len(head) - 1  # keep one slot for eos
    tail = list(tail_ids)[:room]
    body = list(caption_ids)[: max(0, room - len(tail))]
    ids = head + body + tail + [eos_id]
    return ids + [pad_id] * (max_length - len(ids))


def fuse_caption_text(caption: str, class_name: str) -> str:
    """The string form of tail_add (for logs and for tokenizers without id access)."""
    return caption.rstrip() + object_phrase(class_name)
