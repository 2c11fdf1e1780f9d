"""The prior study's mitigations against their published definitions (Somepalli et al. 2023,
github.com/somepago/DCR datasets.py / diff_train.py): probability per sample, token counts, positions,
one mixup lambda per batch."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from dftrain.train import mitigations as m
from dftrain.train.batch import BatchBuilder
from dftrain.train.config import TrainConfig

LIMIT = 1000


def ids_decoder(ids: list[int]) -> str:
    """A stand-in tokenizer whose decoded text shows the ids: 'T12' per id."""
    return " ".join(f"T{i}" for i in ids)


def is_token(word: str) -> bool:
    return word.startswith("T") and word[1:].isdigit() and int(word[1:]) < LIMIT


@pytest.mark.parametrize("p", [0.1, 0.35])
def test_text_mitigations_fire_with_probability_p(p):
    rng, n = random.Random(0), 20_000
    caption = "a red dog on a beach"
    replaced = sum(m.random_caption_replacement(caption, p, rng, id_limit=LIMIT, decode=ids_decoder) != caption
                   for _ in range(n))
    added = sum(m.random_token_addition(caption, p, rng, id_limit=LIMIT, decode=ids_decoder) != caption
                for _ in range(n))
    repeated = sum(m.word_repetition(caption, p, rng) != caption for _ in range(n))
    tolerance = 5 * (p * (1 - p) / n) ** 0.5  # five binomial standard deviations
    for count in (replaced, added, repeated):
        assert abs(count / n - p) < tolerance
    assert m.TEXT_MITIGATION_P == 0.1 and TrainConfig().text_mitigation_p == 0.1  # their trainspecial_prob


def test_replacement_is_four_random_tokens_not_words():
    rng = random.Random(1)
    seen = []
    for _ in range(3000):
        out = m.random_caption_replacement("a red dog", 1.0, rng, id_limit=LIMIT, decode=ids_decoder)
        tokens = out.split()
        assert len(tokens) == 4 and all(is_token(t) for t in tokens)  # decoded together, 4 ids
        seen += [int(t[1:]) for t in tokens]
    assert min(seen) < 10 and max(seen) > LIMIT - 10  # uniform over [0, LIMIT)
    assert abs(sum(seen) / len(seen) - (LIMIT - 1) / 2) < 15
    assert m.random_caption_replacement("x", 1.0, rng, id_limit=LIMIT, decode=ids_decoder, n_tokens=7).count("T") == 7


def test_insert_position_is_uniform_over_every_gap():
    rng, n = random.Random(2), 40_000
    positions = Counter(m.insert_at_random_position("a b c", "X", rng).split().index("X") for _ in range(n))
    assert set(positions) == {0, 1, 2, 3}  # before the first word ... after the last
    assert all(abs(count / n - 0.25) < 0.015 for count in positions.values())


def _is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(word in it for word in small)


def test_word_addition_inserts_two_single_tokens_at_random_positions():
    rng, caption = random.Random(3), "a red dog on a beach"
    words = caption.split()
    first_position = Counter()
    for _ in range(6000):
        out = m.random_token_addition(caption, 1.0, rng, id_limit=LIMIT, decode=ids_decoder).split()
        assert len(out) == len(words) + 2
        added = [w for w in out if is_token(w)]
        assert len(added) == 2 and [w for w in out if not is_token(w)] == words  # order of the caption kept
        first_position[min(out.index(w) for w in added)] += 1
    assert len(first_position) == len(words) + 1  # an added token can land in any gap (0 .. 6)


def test_word_repetition_inserts_two_picked_words_anywhere_not_next_to_themselves():
    rng, caption = random.Random(4), "a b c d e f"
    words = caption.split()
    for _ in range(2000):
        out = m.word_repetition(caption, 1.0, rng).split()
        assert len(out) == len(words) + 2 and _is_subsequence(words, out)
        assert set(out) <= set(words)
    # One repeated word lands in one of the 7 gaps uniformly; it sits next to its own copy only
    # when the gap touches that word (2 gaps of 7). Theirs: insert_rand_word at a random position.
    n = 20_000
    adjacent = 0
    for _ in range(n):
        out = m.word_repetition(caption, 1.0, rng, n_words=1).split()
        adjacent += any(out[i] == out[i + 1] for i in range(len(out) - 1))
    assert abs(adjacent / n - 2 / 7) < 0.015
    assert m.word_repetition("", 1.0, rng) == "" and m.word_repetition("a dog", 0.0, rng) == "a dog"


def test_random_numbers_for_inference():
    rng = random.Random(5)
    out = m.random_number_addition("a dog", rng, n_numbers=4).split()
    numbers = [w for w in out if w.isdigit()]
    assert len(out) == 6 and len(numbers) == 4 and all(0 <= int(x) < m.RANDOM_NUMBER_LIMIT for x in numbers)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A CLIP tokenizer in CLIP's format (bytes + merges learned from a small corpus)."""
    from transformers import CLIPTokenizer

    from dftrain.model.tokenizer import learn_merges, training_corpus, write_clip_tokenizer

    merges = learn_merges(training_corpus(["a red dog on a beach"]), 800)
    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path_factory.mktemp("tok"), merges))


def test_with_a_real_clip_tokenizer(tok):
    limit = m.token_id_limit(tok)
    assert limit == min(tok.bos_token_id, tok.eos_token_id) and limit < len(tok)
    rng, mirror = random.Random(6), random.Random(6)
    out = m.random_caption_replacement("a red dog", 1.0, rng, id_limit=limit, decode=m.token_decoder(tok))
    mirror.random()  # the firing draw
    assert out == tok.decode([mirror.randrange(limit) for _ in range(4)])


def test_mixup_draws_one_lambda_per_batch():
    alpha, n = 0.4, 8
    lam = m.mixup_lambdas(alpha, n, torch.Generator().manual_seed(0))
    assert lam.shape == (n,) and torch.all(lam == lam[0])
    per_sample = m.mixup_lambdas(alpha, n, torch.Generator().manual_seed(0), per_sample=True)
    assert len(set(per_sample.tolist())) == n
    # the batch lambda is Beta(alpha, 1): mean alpha / (alpha + 1)
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([m.mixup_lambdas(alpha, 2, g)[0] for _ in range(20_000)])
    assert abs(draws.mean().item() - alpha / (alpha + 1)) < 0.01


def _builder(**options) -> BatchBuilder:
    cfg = TrainConfig(fusion="none", **options)
    return BatchBuilder(cfg, SimpleNamespace(tokenizer=None), None, device="cpu",
                        generator=torch.Generator().manual_seed(0), rng=random.Random(0), precomputed=True)


def test_batch_builder_mixes_the_batch_with_one_lambda():
    n = 6
    builder = _builder(mixup_alpha=0.5)
    examples = [{"text_states": torch.eye(n)[i].view(1, n)} for i in range(n)]  # one-hot states
    out = builder.text_states(examples, None)
    own = torch.stack([out[i, 0, i] for i in range(n)])
    mixed = own < 1  # examples whose partner is another example
    assert mixed.sum() >= 2 and torch.allclose(own[mixed], own[mixed][0].expand(int(mixed.sum())))
    per_sample = _builder(mixup_alpha=0.5, mixup_per_sample=True).text_states(examples, None)
    own = torch.stack([per_sample[i, 0, i] for i in range(n)])
    assert len({round(v, 6) for v in own[own < 1].tolist()}) > 1


def test_batch_builder_applies_the_text_mitigations_with_p(tok):
    cfg = TrainConfig(fusion="none", word_repeat=True, text_mitigation_p=0.1)
    builder = BatchBuilder(cfg, SimpleNamespace(tokenizer=tok), None, device="cpu",
                           generator=torch.Generator().manual_seed(0), rng=random.Random(0), precomputed=False)
    caption = "a red dog on a beach"
    out = builder.captions([{"caption": caption}] * 5000)
    changed = [c for c in out if c != caption]
    assert abs(len(changed) / 5000 - 0.1) < 0.02
    assert all(len(c.split()) == 8 for c in changed)
    replace = BatchBuilder(TrainConfig(fusion="none", caption_replace=True, text_mitigation_p=1.0),
                           SimpleNamespace(tokenizer=tok), None, device="cpu", generator=torch.Generator(),
                           rng=random.Random(0), precomputed=False)
    assert all(c != caption for c in replace.captions([{"caption": caption}] * 20))
