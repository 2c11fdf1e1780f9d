"""The embedded tiny SD-shaped pipeline: builds offline, round-trips, generates, tokenizes, caches its VAE."""

from __future__ import annotations

import io
import json
import os
import shutil
import time

import pytest
import torch

# Small enough for CI; the held-out PSNR bar below is set for this many steps.
TEST_VAE_STEPS = 200
# A VAE that learned nothing spatial is no better than painting each image its mean colour;
# after TEST_VAE_STEPS steps the tiny VAE reconstructs shapes and edges, which is worth several dB
# more (measured +3.0 dB at 200 steps, +2.1 at 120, -5.5 untrained). Asking +2 dB fails for a VAE
# that only learned colours, a broken fit or a wrong scaling, without flaking on a noisy machine.
PSNR_MARGIN_DB = 2.0


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dftrain-cache")
    old = os.environ.get("DFTRAIN_CACHE")
    os.environ["DFTRAIN_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("DFTRAIN_CACHE", None)
    else:
        os.environ["DFTRAIN_CACHE"] = old


@pytest.fixture(scope="module")
def built(cache_root, tmp_path_factory):
    from dftrain.model import build_tiny_pipeline

    out = tmp_path_factory.mktemp("models") / "tiny"
    start = time.perf_counter()
    path = build_tiny_pipeline(out, seed=0, vae_steps=TEST_VAE_STEPS)
    return path, time.perf_counter() - start


@pytest.fixture(scope="module")
def pipe(built):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(built[0])


def _held_out_images(n=24, seed=123):
    from PIL import Image

    from dftrain.model.vae_fit import images_to_tensor
    from dftrain.synthetic import synthetic_object_samples, synthetic_train_samples

    samples = list(synthetic_train_samples(n, 64, 0.0, seed)) + list(synthetic_object_samples(1, 64, seed))
    return images_to_tensor([Image.open(io.BytesIO(s["jpg"])) for s in samples], 64)


def test_folder_loads_like_stable_diffusion(built, pipe):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path, _ = built
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for name in ("unet", "vae", "text_encoder"):
        assert list((path / name).glob("*.safetensors")), name
        assert not list((path / name).glob("*.bin")), name
    assert isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, DDPMScheduler)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert pipe.unet.config.use_linear_projection
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.text_encoder.config.max_position_embeddings == 77 == pipe.tokenizer.model_max_length
    assert pipe.vae.config.latent_channels == 4
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"


def test_round_trip_keeps_every_parameter(built, pipe, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    path, _ = built
    on_disk = load_file(str(next((path / "unet").glob("*.safetensors"))))
    for name, tensor in pipe.unet.state_dict().items():
        assert torch.equal(on_disk[name], tensor), name
    pipe.save_pretrained(tmp_path / "again", safe_serialization=True)
    again = StableDiffusionPipeline.from_pretrained(tmp_path / "again")
    for component in ("unet", "vae", "text_encoder"):
        first = getattr(pipe, component).state_dict()
        second = getattr(again, component).state_dict()
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first), component


def test_generates_an_image_on_cpu(pipe):
    generator = torch.Generator().manual_seed(0)
    result = pipe("Vintage Lumora XR-2041 red star poster", num_inference_steps=2, generator=generator,
                  guidance_scale=3.0, output_type="pil")
    image = result.images[0]
    assert image.size == (64, 64) and image.mode == "RGB"


def test_tokenizer_encodes_unseen_words_and_loads_from_clip_files(built, pipe, tmp_path):
    from transformers import CLIPTokenizer

    tokenizer = pipe.tokenizer
    text = "a quokka eating zwieback in Reykjavík, 1987"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in ids[1:-1]  # nothing fell back to the unknown token
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" , ", ", ").replace("1 9 8 7", "1987") == text.lower()
    padded = tokenizer([text, "cat"], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert padded.input_ids.shape == (2, 77)
    # Seen words are single tokens (merges learned from the captions and the word list).
    assert len(tokenizer("poster").input_ids) == 3
    # CLIP's format: vocab.json + merges.txt alone give the same tokenizer.
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(built[0] / "tokenizer" / name, tmp_path / name)
    assert CLIPTokenizer.from_pretrained(tmp_path)(text).input_ids == ids


def test_vae_reconstructs_held_out_images(pipe, built):
    from dftrain.model.vae_fit import mean_colour_baseline, psnr, reconstruct

    images = _held_out_images()
    vae_psnr = psnr(reconstruct(pipe.vae, images), images)
    baseline = psnr(mean_colour_baseline(images), images)
    assert vae_psnr > baseline + PSNR_MARGIN_DB, (vae_psnr, baseline)
    # The latents are scaled to unit std, as SD's scaling_factor does.
    with torch.no_grad():
        latents = pipe.vae.encode(images).latent_dist.mean * pipe.vae.config.scaling_factor
    assert 0.6 < float(latents.std()) < 1.6
    report = json.loads((built[0] / "dftrain_model.json").read_text())["vae"]
    assert report["cache_hit"] is False and report["steps"] == TEST_VAE_STEPS


def test_second_build_reuses_the_cached_vae(built, pipe, tmp_path):
    from diffusers import AutoencoderKL

    from dftrain.model import build_tiny_pipeline

    _, first_seconds = built
    start = time.perf_counter()
    path = build_tiny_pipeline(tmp_path / "second", seed=0, vae_steps=TEST_VAE_STEPS,
                               prediction_type="v_prediction")
    seconds = time.perf_counter() - start
    report = json.loads((path / "dftrain_model.json").read_text())
    assert report["vae"]["cache_hit"] is True
    assert seconds < first_seconds
    vae = AutoencoderKL.from_pretrained(path / "vae")
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), pipe.vae.state_dict().values(), strict=True))
    assert json.loads((path / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    # Same seed: the same UNet and text encoder weights as the first build.
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(path / "unet")
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), pipe.unet.state_dict().values(), strict=True))


def test_training_step_is_fast(pipe):
    unet = pipe.unet
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    latents = torch.randn(4, 4, 16, 16)
    context = torch.randn(4, 77, unet.config.cross_attention_dim)
    timesteps = torch.randint(0, 1000, (4,))
    times = []
    for _ in range(4):
        start = time.perf_counter()
        loss = torch.nn.functional.mse_loss(unet(latents, timesteps, context).sample, latents)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    unet.eval()
    # ~0.08 s on one idle core; the bound leaves room for a busy CI machine.
    assert sorted(times)[1] < 1.0, times


def test_describe_model_counts_parameters(built, pipe):
    from dftrain.model import describe_model

    info = describe_model(built[0])
    for component in ("unet", "vae", "text_encoder"):
        assert info["parameters"][component] == sum(p.numel() for p in getattr(pipe, component).parameters())
    assert info["resolution"] == 64 and info["latent_size"] == 16 and info["prediction_type"] == "epsilon"
    assert info["tokenizer_vocab"] == len(pipe.tokenizer)


def test_cli_model_info(built):
    from typer.testing import CliRunner

    from dftrain.commands.model import app

    result = CliRunner().invoke(app, ["info", str(built[0]), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["resolution"] == 64


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    from dftrain.errors import ConfigError
    from dftrain.model import build_tiny_pipeline

    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError):
        build_tiny_pipeline(tmp_path / "precious", vae_steps=1)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError):
        build_tiny_pipeline(tmp_path / "x", prediction_type="sample", vae_steps=1)


def test_sd21_unet_config_matches_the_published_model():
    from diffusers import UNet2DConditionModel

    from dftrain.model import sd21_unet_config

    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd21_unet_config())
    # stabilityai/stable-diffusion-2-1's UNet has 865,910,724 parameters.
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724
    assert unet.config.sample_size == 96 and sd21_unet_config(base=True)["sample_size"] == 64
