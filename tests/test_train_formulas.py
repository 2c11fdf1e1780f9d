"""Fusion, mitigation, schedule and EMA formulas against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from dftrain.train import fusion, mitigations
from dftrain.train.ema import assemble_partitions, ema_decay_at, ema_update_
from dftrain.train.schedule import lr_factor


def test_latent_fusion_formula():
    g = torch.Generator().manual_seed(0)
    z, z_o = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    for w in (0.0, 0.1, 0.5, 1.0):
        expected = (1 - w) * z + w * z_o
        assert torch.allclose(fusion.latent_fusion(z, z_o, w), expected, atol=1e-7)
    assert torch.equal(fusion.latent_fusion(z, z_o, 0.0), z)
    assert torch.allclose(fusion.latent_fusion(z, z_o, 1.0), z_o)
    with pytest.raises(ValueError):
        fusion.latent_fusion(z, z_o[:, :3], 0.1)


def test_embed_add_formula():
    g = torch.Generator().manual_seed(1)
    c, c_k = torch.randn(3, 77, 32, generator=g), torch.randn(3, 77, 32, generator=g)
    out = fusion.embed_add(c, c_k, 0.5)
    assert torch.allclose(out, 0.5 * c + 0.5 * c_k)
    # element by element for another weight
    w = 0.3
    out = fusion.embed_add(c, c_k, w)
    assert math.isclose(out[1, 5, 7].item(), (1 - w) * c[1, 5, 7].item() + w * c_k[1, 5, 7].item(), rel_tol=1e-6)


def test_object_phrase_and_fusion_modes():
    assert fusion.object_phrase("goldfish") == " with goldfish"
    assert fusion.fuse_caption_text("a photo of a dog ", "cat") == "a photo of a dog with cat"
    assert [fusion.uses_latent_fusion(m) for m in fusion.FUSION_MODES] == [False, True, False, True]
    assert [fusion.uses_caption_fusion(m) for m in fusion.FUSION_MODES] == [False, False, True, True]


def test_tail_add_ids_appends_object_tokens_before_eos():
    ids = fusion.tail_add_ids([10, 11, 12], [20, 21], max_length=8, bos_id=1, eos_id=2, pad_id=0)
    assert ids == [1, 10, 11, 12, 20, 21, 2, 0]
    # too long: the caption is truncated, the object tokens survive
    ids = fusion.tail_add_ids(list(range(100, 110)), [20, 21], max_length=6, bos_id=1, eos_id=2, pad_id=0)
    assert ids == [1, 100, 101, 20, 21, 2]


def test_tail_add_with_a_real_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    from dftrain.model.tokenizer import write_clip_tokenizer

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path / "tok", []))
    caption, name = "a red circle", "goldfish"
    ids = fusion.tail_add_ids(
        tok(caption, add_special_tokens=False).input_ids, tok(fusion.object_phrase(name), add_special_tokens=False).input_ids,
        tok.model_max_length, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
    )
    # identical to tokenizing the fused string: appending tokens == appending " with k"
    assert ids == tok(fusion.fuse_caption_text(caption, name), padding="max_length", max_length=tok.model_max_length).input_ids


def test_gaussian_embedding_noise_formula():
    c = torch.randn(2, 5, 4)
    out = mitigations.gaussian_embedding_noise(c, 0.25, torch.Generator().manual_seed(3))
    n = torch.randn(c.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out, c + 0.25 * n)


def test_mixup_lambda_is_beta_alpha_1():
    alpha = 2.0
    lam = mitigations.sample_mixup_lambda(alpha, 20000, torch.Generator().manual_seed(0))
    assert lam.min() >= 0 and lam.max() <= 1
    assert abs(lam.mean().item() - alpha / (alpha + 1)) < 0.01  # Beta(a, 1) mean
    assert abs((lam < 0.5).float().mean().item() - 0.5**alpha) < 0.01  # CDF x^a


def test_embedding_mixup_formula():
    c = torch.randn(3, 4, 2)
    lam, partner = torch.tensor([0.2, 1.0, 0.7]), torch.tensor([2, 0, 1])
    out = mitigations.embedding_mixup(c, lam, partner)
    for i in range(3):
        assert torch.allclose(out[i], lam[i] * c[i] + (1 - lam[i]) * c[partner[i]])


def test_lr_schedules():
    assert lr_factor(0, "constant", 10, 100) == 1.0
    assert lr_factor(0, "constant_with_warmup", 10, 100) == pytest.approx(0.1)
    assert lr_factor(4, "constant_with_warmup", 10, 100) == pytest.approx(0.5)
    assert lr_factor(50, "constant_with_warmup", 10, 100) == 1.0
    assert lr_factor(10, "cosine", 10, 110) == pytest.approx(1.0)
    assert lr_factor(60, "cosine", 10, 110) == pytest.approx(0.5)
    assert lr_factor(110, "cosine", 10, 110) == pytest.approx(0.0, abs=1e-12)


def test_ema_math_and_zero3_partition_assembly():
    shadow, value = torch.ones(3), torch.zeros(3)
    ema_update_(shadow, value, 0.9)
    assert torch.allclose(shadow, torch.full((3,), 0.9))
    assert ema_decay_at(0, 0.9999) == pytest.approx(0.1)
    assert ema_decay_at(10**7, 0.9999) == 0.9999
    full = torch.arange(10.0).view(2, 5)
    # ZeRO-3 over 3 ranks: flatten, pad to 12, split in 4-element partitions
    flat = torch.cat([full.view(-1), torch.zeros(2)])
    chunks = list(flat.split(4))
    assert torch.equal(assemble_partitions(chunks, [2, 5]), full)
