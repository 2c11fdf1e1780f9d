"""The fused object as the paper draws it: a random synonym of its class, a random flip, a sample
of the VAE posterior (dftrain/train/object_draws.py, the object bank, the batch builder)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from dftrain.train.object_draws import coin_flips, mirrored, posterior_sample, synonym_choices


def test_synonym_choices_are_uniform_over_each_class_synonyms():
    counts = torch.tensor([1, 3, 2] * 20_000)
    uniforms = torch.rand(len(counts), generator=torch.Generator().manual_seed(0))
    picks = synonym_choices(counts, uniforms)
    assert (picks[counts == 1] == 0).all()
    for count in (2, 3):
        freq = torch.bincount(picks[counts == count], minlength=count).float() / (counts == count).sum()
        assert torch.allclose(freq, torch.full((count,), 1 / count), atol=0.01), freq
    # edges: u = 0 picks the first, u just below 1 the last, never one past it
    assert synonym_choices(torch.tensor([3, 3]), torch.tensor([0.0, 1 - 1e-9])).tolist() == [0, 2]
    assert synonym_choices(torch.tensor([3]), torch.tensor([1.0])).tolist() == [2]


def test_posterior_sample_is_mean_plus_std_times_noise():
    mean, std, eps = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0]), torch.tensor([2.0, 7.0])
    assert posterior_sample(mean, std, eps).tolist() == [2.0, -2.0]
    many = posterior_sample(torch.full((200_000,), 3.0), torch.full((200_000,), 0.5),
                            torch.randn(200_000, generator=torch.Generator().manual_seed(1)))
    assert abs(many.mean().item() - 3.0) < 0.01 and abs(many.std().item() - 0.5) < 0.01


def test_mirrored_flips_exactly_the_chosen_images_and_coins_are_fair():
    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    out = mirrored(images, torch.tensor([True, False]))
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])
    flips = coin_flips(100_000, torch.Generator().manual_seed(2))
    assert abs(flips.float().mean().item() - 0.5) < 0.01


def test_class_synonyms_come_from_the_json_or_a_words_txt_style_name():
    from dftrain.errors import DftrainError
    from dftrain.train.data import class_name_of, class_synonyms_of

    listed = {"json": {"class_name": "goldfish", "class_synonyms": ["goldfish", "Carassius auratus"]}}
    assert class_synonyms_of(listed) == ["goldfish", "Carassius auratus"]
    assert class_synonyms_of({"json": {"class_name": "tabby, tabby_cat"}}) == ["tabby", "tabby cat"]
    assert class_name_of({"json": {"class_name": "tabby, tabby_cat"}}) == "tabby"
    assert class_synonyms_of({"json": {}, "cls": 3}) == ["3"]
    with pytest.raises(DftrainError, match="k1"):
        class_synonyms_of({"__key__": "k1", "json": {}})


def write_bank(folder, classes: dict[str, list[str]], per_class: int = 2):
    """An object bank whose classes list synonyms, as `dftrain shard objects` writes from words.txt."""
    import io

    from PIL import Image

    from dftrain.shards import ShardWriter

    with ShardWriter(folder, samples_per_shard=100, kind="objects") as writer:
        for class_id, (name, synonyms) in enumerate(classes.items()):
            for i in range(per_class):
                buf = io.BytesIO()
                Image.new("RGB", (32, 32), (40 * class_id, 100 + 50 * i, 30)).save(buf, format="JPEG")
                meta = {"class_name": name, "class_id": class_id}
                if synonyms:
                    meta["class_synonyms"] = synonyms
                writer.write({"__key__": f"{class_id:03d}{i:03d}", "jpg": buf.getvalue(), "cls": class_id, "json": meta})
    return folder


def test_the_bank_draws_a_random_synonym_per_object_or_always_the_name(tmp_path):
    from dftrain.train.data import ObjectBank

    bank = ObjectBank(write_bank(tmp_path / "bank", {"goldfish": ["goldfish", "Carassius auratus"],
                                                     "tabby": ["tabby", "tabby cat", "queen"], "acorn": []}),
                      precomputed=False, resolution=32)
    assert bank.class_names == ["acorn", "goldfish", "tabby"]
    assert bank.labels == ["acorn", "goldfish", "Carassius auratus", "tabby", "tabby cat", "queen"]
    generator = torch.Generator().manual_seed(0)
    objects = bank.draw(30_000, generator)
    labels = bank.draw_labels(objects, generator, "synonym")
    names = [bank.labels[i] for i in labels.tolist()]
    classes = [bank.class_names[c] for c in bank.class_ids[objects].tolist()]
    for label, cls in zip(names, classes, strict=True):  # always one of its own class's names
        assert label in {"acorn": ["acorn"], "goldfish": ["goldfish", "Carassius auratus"],
                         "tabby": ["tabby", "tabby cat", "queen"]}[cls]
    tabby = [n for n, c in zip(names, classes, strict=True) if c == "tabby"]
    for synonym in ("tabby", "tabby cat", "queen"):
        assert abs(tabby.count(synonym) / len(tabby) - 1 / 3) < 0.02
    state = generator.get_state()
    first = bank.draw_labels(objects, generator, "first")
    assert [bank.labels[i] for i in first.tolist()] == classes  # the class name, as before
    assert torch.equal(generator.get_state(), state)  # and no random number used


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    from train_helpers import build_test_pipeline

    from dftrain.train.models import load_components

    model = build_test_pipeline(tmp_path_factory.mktemp("objects_model") / "model")
    cfg = SimpleNamespace(model=str(model), attention="sdpa", gradient_checkpointing=False, prediction_type=None,
                          fusion="dual", caption_replace=False)
    return load_components(cfg, precomputed=False, device=torch.device("cpu"), frozen_dtype=torch.float32)


def builder_for(components, bank, seed=0, **options):
    from dftrain.train.batch import BatchBuilder
    from dftrain.train.config import TrainConfig

    cfg = TrainConfig(**{"object_cache_mb": 64, **options})  # the defaults: the paper's draws
    return BatchBuilder(cfg, components, bank, device=torch.device("cpu"),
                        generator=torch.Generator().manual_seed(seed), rng=random.Random(seed), precomputed=False)


@pytest.mark.parametrize("cache_mb", [64, 0])  # cached once at start-up / encoded at each draw
def test_the_fused_object_latent_is_a_flipped_posterior_sample_when_on_and_the_mean_when_off(
        components, tmp_path, cache_mb):
    from dftrain.train.data import ObjectBank

    bank = ObjectBank(write_bank(tmp_path / "bank", {"goldfish": ["goldfish", "Carassius auratus"], "tabby": []},
                                 per_class=3), precomputed=False, resolution=32)
    n = 6
    examples = [{"pixels": bank.pixels(torch.tensor([i % len(bank)]))[0], "caption": "a photo", "captions": ["a photo"]}
                for i in range(n)]

    def fused(**options):
        builder = builder_for(components, bank, seed=3, object_cache_mb=cache_mb, **options)
        assert (bank.latents is not None) == (cache_mb > 0)
        replay = torch.Generator().manual_seed(3)  # the builder's draws, in its order
        builder.build(examples)
        idx = torch.randint(0, len(bank), (n,), generator=replay)
        torch.rand(n, generator=replay)  # the synonyms
        torch.rand(n, generator=replay)  # the training images' flips
        object_flip = coin_flips(n, replay) if options.get("object_flip", True) else torch.zeros(n, dtype=torch.bool)
        torch.randn((n, 4, 8, 8), generator=replay)  # the training latents' posterior noise
        noise = torch.randn((n, 4, 8, 8), generator=replay)
        mean, std = builder.encode_posterior(mirrored(bank.pixels(idx), object_flip))
        return builder.last_object_latents, mean, std, noise, object_flip

    got, mean, std, noise, flip = fused()
    assert flip.any() and not flip.all()
    tol = dict(atol=2e-3) if cache_mb else dict(atol=1e-5)  # the cache holds fp16
    assert torch.allclose(got, posterior_sample(mean, std, noise), **tol)
    assert not torch.allclose(got, mean, atol=1e-2)
    got, mean, _, _, flip = fused(object_latent="mean", object_flip=False)
    assert not flip.any() and torch.allclose(got, mean, **tol)
    bank.latents = None  # the next parametrization caches (or not) again


def test_the_caption_fusion_uses_the_drawn_synonym(components, tmp_path):
    from dftrain.train import fusion
    from dftrain.train.data import ObjectBank
    from dftrain.train.models import encode_token_ids, tokenize

    bank = ObjectBank(write_bank(tmp_path / "bank", {"tabby": ["tabby", "tabby cat", "queen"]}),
                      precomputed=False, resolution=32)
    examples = [{"pixels": bank.pixels(torch.tensor([0]))[0], "caption": "a photo", "captions": ["a photo"]}] * 8

    def states_by_label(mode):
        builder = builder_for(components, bank, seed=5, object_label=mode, fusion="caption")
        _, _, states, _ = builder.build(examples)
        caption = encode_token_ids(components.text_encoder, tokenize(components.tokenizer, ["a photo"])).float()
        found = []
        for row in states:
            for label in bank.labels:
                phrase = encode_token_ids(components.text_encoder,
                                          tokenize(components.tokenizer, [fusion.object_phrase(label)])).float()
                if torch.allclose(row, fusion.embed_add(caption, phrase, 0.5)[0], atol=1e-5):
                    found.append(label)
        assert len(found) == len(examples)
        return found

    assert len(set(states_by_label("synonym"))) > 1
    assert set(states_by_label("first")) == {"tabby"}


class RecordingUNet:
    """Stands in for the DeepSpeed engine around the UNet: keeps what the training step feeds it."""

    def __call__(self, latents, timesteps, encoder_hidden_states):
        self.latents, self.timesteps, self.states = latents, timesteps, encoder_hidden_states
        return SimpleNamespace(sample=torch.zeros_like(latents, requires_grad=True))

    def backward(self, loss):
        self.loss = loss

    def step(self):
        pass


def test_the_unet_gets_the_fused_latent_and_the_caption_of_the_same_drawn_object(components, tmp_path):
    """Dual fusion inside a training step: the UNet receives noise added to (1 - w_lat) z + w_lat z_o,
    and the caption states are fused with the label of that same object."""
    from dftrain.train import fusion
    from dftrain.train.data import ObjectBank
    from dftrain.train.models import encode_token_ids, tokenize
    from dftrain.train.trainer import forward_backward

    bank = ObjectBank(write_bank(tmp_path / "bank", {"goldfish": [], "tabby": [], "lighthouse": []}, per_class=2),
                      precomputed=False, resolution=32)
    examples = [{"pixels": bank.pixels(torch.tensor([0]))[0], "caption": "a photo", "captions": ["a photo"]}] * 8

    def step(w_lat):
        builder = builder_for(components, bank, seed=11, fusion="dual", w_lat=w_lat, w_emb=0.5, object_label="first",
                              object_latent="mean", object_flip=False, object_cache_mb=0)
        unet = RecordingUNet()
        forward_backward(unet, builder, examples, torch.device("cpu"), torch.float32)
        return unet, builder

    low, builder = step(0.1)
    high, same_draws = step(0.6)
    objects = builder.last_objects
    assert torch.equal(objects, same_draws.last_objects) and len(set(bank.class_ids[objects].tolist())) > 1
    z, z_obj = builder.last_clean_latents, builder.last_object_latents
    mean, _ = builder.encode_posterior(bank.pixels(objects))
    assert torch.allclose(z_obj, mean, atol=1e-5)  # z_o is the drawn objects' own latents
    # Same draws, other weight: the UNet inputs differ by sqrt(alpha_bar_t) (w2 - w1) (z_o - z), nothing else.
    assert torch.equal(low.timesteps, high.timesteps)
    alpha_bar = components.noise_scheduler.alphas_cumprod[low.timesteps].float().sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(high.latents - low.latents, alpha_bar * 0.5 * (z_obj - z), atol=1e-4)
    caption = encode_token_ids(components.text_encoder, tokenize(components.tokenizer, ["a photo"])).float()
    for row, obj in zip(low.states, objects.tolist(), strict=True):
        label = bank.labels[int(bank.label_start[bank.class_ids[obj]])]
        phrase = encode_token_ids(components.text_encoder, tokenize(components.tokenizer, [fusion.object_phrase(label)]))
        assert torch.allclose(row, fusion.embed_add(caption, phrase.float(), 0.5)[0], atol=1e-5), label


def test_the_default_synthetic_bank_records_class_synonyms_and_the_draws_cover_them(tmp_path):
    """`--object-label synonym` on the embedded data: the bank's samples and manifest list every class's
    names, and the draws give each of a class's names, uniformly, and only its own."""
    from dftrain.shards import Manifest
    from dftrain.synthetic import OBJECT_CLASS_NAMES, write_synthetic
    from dftrain.synthetic.objects import OBJECT_CLASS_SYNONYMS
    from dftrain.train.data import ObjectBank

    objects = write_synthetic(tmp_path / "syn", n=4, size=8, seed=0, samples_per_shard=100, objects_per_class=1)["objects"]
    classes = Manifest.load(objects).extra["classes"]
    assert [c["class_name"] for c in classes] == OBJECT_CLASS_NAMES
    assert {c["class_name"]: c.get("class_synonyms", [c["class_name"]]) for c in classes} == {
        name: list(names) for name, names in OBJECT_CLASS_SYNONYMS.items()}
    assert sum(len(names) > 1 for names in OBJECT_CLASS_SYNONYMS.values()) >= 8
    bank = ObjectBank(objects, precomputed=False, resolution=8)
    generator = torch.Generator().manual_seed(0)
    drawn = bank.draw(24_000, generator)
    labels = [bank.labels[i] for i in bank.draw_labels(drawn, generator, "synonym").tolist()]
    by_class: dict[str, list[str]] = {}
    for label, class_id in zip(labels, bank.class_ids[drawn].tolist(), strict=True):
        by_class.setdefault(bank.class_names[class_id], []).append(label)
    for name, names in OBJECT_CLASS_SYNONYMS.items():
        assert set(by_class[name]) == set(names)  # every synonym drawn, none of another class
        for synonym in names:
            assert abs(by_class[name].count(synonym) / len(by_class[name]) - 1 / len(names)) < 0.06
