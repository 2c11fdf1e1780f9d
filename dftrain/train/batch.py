"""Turn a list of examples into the UNet's inputs: latents (with latent fusion) and caption
states (with the text mitigations, caption fusion and embedding mitigations).

All randomness comes from one torch.Generator and one random.Random per rank, in a fixed
order, so a resumed run that restores both draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from dftrain.errors import ConfigError
from dftrain.train import fusion, mitigations
from dftrain.train.data import object_views
from dftrain.train.input_pipeline import to_device
from dftrain.train.models import encode_token_ids, tokenize
from dftrain.train.object_draws import coin_flips, mirrored, posterior_sample


def precomputed_view(example: dict, name: str, flipped: bool) -> torch.Tensor:
    """`latent` / `latent_std` of an example, or of its mirror image: the precomputed mirror when stored,
    else the latent flipped (the VAE is not exactly flip-equivariant, hence the stored one)."""
    if not flipped:
        return example[name]
    mirror = example.get(name.replace("latent", "latent_flip", 1))
    return mirror if mirror is not None else example[name].flip(-1)


def object_options(cfg) -> tuple[str, bool, bool]:
    """(label mode, flip objects, sample object latents) of a config (defaults: the paper's)."""
    return (getattr(cfg, "object_label", "synonym"), bool(getattr(cfg, "object_flip", True)),
            getattr(cfg, "object_latent", "sample") == "sample")


class BatchBuilder:
    def __init__(self, cfg, components, bank, *, device, generator: torch.Generator, rng: random.Random, precomputed: bool,
                 stored_text: bool | None = None):
        self.cfg, self.c, self.bank = cfg, components, bank
        self.device, self.generator, self.rng, self.precomputed = device, generator, rng, precomputed
        self.stored_text = precomputed if stored_text is None else stored_text  # text states in the latents
        self.latent_fusion = fusion.uses_latent_fusion(cfg.fusion)
        self.caption_fusion = fusion.uses_caption_fusion(cfg.fusion)
        if components.tokenizer is not None:  # random tokens of the text mitigations come from here
            self.token_id_limit = mitigations.token_id_limit(components.tokenizer)
            self.decode = mitigations.token_decoder(components.tokenizer)
        self.object_label, self.object_flip, self.object_posterior = object_options(cfg)
        if bank is not None and self.latent_fusion and not precomputed:
            latent_shape = tuple(self.encode_posterior(bank.pixels(torch.arange(1)))[0].shape[1:])
            bank.cache_latents(self.encode_posterior, max_bytes=cfg.object_cache_mb * 2**20, latent_shape=latent_shape,
                               views=object_views(self.object_flip, self.object_posterior),
                               spill_dir=Path(cfg.out) / ".object-latents" if cfg.out else None)
        if bank is not None and self.latent_fusion and precomputed and self.object_posterior \
                and "latent_std" not in bank.latents:
            raise ConfigError("the object bank's latents were precomputed without the posterior std: run "
                              "`dftrain precompute --objects` again, or pass --object-latent mean")
        self.object_states = None
        if self.caption_fusion and cfg.caption_fusion == "embed_add":
            # E(" with " + k) for every class and each of its synonyms, once: the text encoder is frozen.
            phrases = [fusion.object_phrase(k) for k in bank.labels]
            ids = tokenize(components.tokenizer, phrases)
            self.object_states = torch.cat(
                [encode_token_ids(components.text_encoder, ids[i : i + 64]) for i in range(0, len(ids), 64)]
            ).float()

    # ---- text -------------------------------------------------------------------------
    def captions(self, examples: list[dict]) -> list[str]:
        cfg, rng = self.cfg, self.rng
        out = []
        for ex in examples:
            caption = mitigations.choose_one_caption(ex["captions"], rng) if cfg.multi_caption else ex["caption"]
            p = cfg.text_mitigation_p  # each enabled mitigation fires on its own draw
            if cfg.caption_replace:
                caption = mitigations.random_caption_replacement(
                    caption, p, rng, id_limit=self.token_id_limit, decode=self.decode, n_tokens=cfg.caption_replace_tokens)
            if cfg.word_insert:
                caption = mitigations.random_token_addition(
                    caption, p, rng, id_limit=self.token_id_limit, decode=self.decode, n_tokens=cfg.word_insert_tokens)
            if cfg.word_repeat:
                caption = mitigations.word_repetition(caption, p, rng, n_words=cfg.word_repeat_words)
            out.append(caption)
        return out

    def tail_added_ids(self, captions: list[str], class_names: list[str]) -> torch.Tensor:
        tok = self.c.tokenizer
        rows = []
        for caption, name in zip(captions, class_names, strict=True):
            rows.append(
                fusion.tail_add_ids(
                    tok(caption, add_special_tokens=False).input_ids,
                    tok(fusion.object_phrase(name), add_special_tokens=False).input_ids,
                    tok.model_max_length,
                    tok.bos_token_id,
                    tok.eos_token_id,
                    tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                )
            )
        return torch.tensor(rows)

    def text_states(self, examples: list[dict], label_idx: torch.Tensor | None) -> torch.Tensor:
        """Caption states; `label_idx`: the drawn objects' labels (indices into bank.labels)."""
        cfg = self.cfg
        if self.stored_text:
            states = torch.stack([ex["text_states"] for ex in examples]).float()
        else:
            captions = self.captions(examples)
            if self.caption_fusion and cfg.caption_fusion == "tail_add":
                ids = self.tail_added_ids(captions, [self.bank.labels[int(k)] for k in label_idx])
            else:
                ids = tokenize(self.c.tokenizer, captions)
            states = encode_token_ids(self.c.text_encoder, ids).float().cpu()
        if self.caption_fusion and cfg.caption_fusion == "embed_add":
            states = fusion.embed_add(states, self.object_states[label_idx].to(states.device), cfg.w_emb)
        if cfg.embed_noise_sigma > 0:
            states = mitigations.gaussian_embedding_noise(states, cfg.embed_noise_sigma, self.generator)
        if cfg.mixup_alpha > 0:
            lam = mitigations.mixup_lambdas(cfg.mixup_alpha, len(examples), self.generator,
                                            per_sample=cfg.mixup_per_sample)
            partners = mitigations.mixup_partners(len(examples), self.generator)
            states = mitigations.embedding_mixup(states, lam, partners)
        return states

    # ---- latents ----------------------------------------------------------------------
    @torch.no_grad()
    def encode_posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the VAE latent distribution x scaling factor (object latents: constants per image)."""
        vae = self.c.vae
        dist = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
        return dist.mean.float().cpu() * self.c.scaling_factor, dist.std.float().cpu() * self.c.scaling_factor

    def flips(self, n: int) -> torch.Tensor:
        if not self.cfg.random_flip:
            return torch.zeros(n, dtype=torch.bool)
        return coin_flips(n, self.generator)

    def noise_like(self, t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=self.generator).to(t.device, t.dtype)

    @torch.no_grad()
    def latents(self, examples: list[dict], object_idx: torch.Tensor | None) -> torch.Tensor:
        n = len(examples)
        flip = self.flips(n)
        use_objects = self.latent_fusion and object_idx is not None
        object_flip = coin_flips(n, self.generator) if use_objects and self.object_flip else torch.zeros(n, dtype=torch.bool)
        cached_objects = use_objects and self.bank.latents is not None
        obj_mean = obj_std = None
        if cached_objects:  # precomputed or cached: the stored mean (and std), the mirror's where flipped
            obj_mean = self.bank.cached_latents(object_idx, object_flip)
            if self.object_posterior:
                obj_std = self.bank.cached_latents(object_idx, object_flip, "latent_std")
        if self.precomputed:
            means = [precomputed_view(ex, "latent", f) for ex, f in zip(examples, flip.tolist(), strict=True)]
            z = torch.stack(means).float()
            if all(ex.get("latent_std") is not None for ex in examples):  # folders from before: the mean only
                stds = torch.stack([precomputed_view(ex, "latent_std", f)
                                    for ex, f in zip(examples, flip.tolist(), strict=True)]).float()
                z = z + stds * torch.randn(z.shape, generator=self.generator)
        else:
            pixels = mirrored(torch.stack([ex["pixels"] for ex in examples]), flip)
            encode_objects = use_objects and not cached_objects
            if encode_objects:  # one VAE call for both
                pixels = torch.cat([pixels, mirrored(self.bank.pixels(object_idx), object_flip)])
            vae = self.c.vae
            dist = vae.encode(to_device(pixels, self.device, vae.dtype)).latent_dist
            noise = self.noise_like(dist.mean[:n])
            z = posterior_sample(dist.mean[:n], dist.std[:n], noise).float().cpu() * self.c.scaling_factor
            if encode_objects:
                obj_mean = dist.mean[n:].float().cpu() * self.c.scaling_factor
                obj_std = dist.std[n:].float().cpu() * self.c.scaling_factor
        z_obj = obj_mean
        if obj_mean is not None and self.object_posterior:  # after the training noise, whichever the path
            z_obj = posterior_sample(obj_mean, obj_std, torch.randn(obj_mean.shape, generator=self.generator))
        self.last_object_latents = z_obj  # what the fusion used (for inspection and tests)
        self.last_clean_latents = z  # the training images' latents before the fusion (idem)
        if z_obj is not None:
            z = fusion.latent_fusion(z, z_obj, self.cfg.w_lat)
        return z

    # ---- everything -------------------------------------------------------------------
    def build(self, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy latents, timesteps, caption states, target), on CPU in fp32."""
        n = len(examples)
        object_idx = self.bank.draw(n, self.generator) if self.bank is not None else None
        self.last_objects = object_idx  # the drawn objects, for inspection and tests
        label_idx = None
        if object_idx is not None and self.caption_fusion:
            label_idx = self.bank.draw_labels(object_idx, self.generator, self.object_label)
        z = self.latents(examples, object_idx)
        states = self.text_states(examples, label_idx)
        sched = self.c.noise_scheduler
        noise = torch.randn(z.shape, generator=self.generator)
        t = torch.randint(0, sched.config.num_train_timesteps, (n,), generator=self.generator)
        noisy = sched.add_noise(z, noise, t)
        if sched.config.prediction_type == "epsilon":
            target = noise
        elif sched.config.prediction_type == "v_prediction":
            target = sched.get_velocity(z, noise, t)
        else:
            raise ValueError(f"unsupported prediction type {sched.config.prediction_type!r}")
        return noisy, t, states, target
