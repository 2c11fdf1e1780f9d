"""One DeepSpeed process in the test process: resume equality, precomputed latents, export."""

from __future__ import annotations

import pytest
import torch
from train_helpers import in_process_env, quick_config, read_metrics, shared_assets, unet_weights

from dftrain.train.trainer import train


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def test_resume_equals_uninterrupted_run(assets, tmp_path, monkeypatch):
    """6 steps in one run == 3 steps + resume + 3 steps (fp32, parameters within 1e-6)."""
    in_process_env(monkeypatch)
    common = dict(export=False, warmup_steps=2, mixup_alpha=0.5, embed_noise_sigma=0.05, word_repeat=True,
                  text_mitigation_p=0.5, caption_field="orig")
    train(quick_config(assets, tmp_path / "straight", **common))
    train(quick_config(assets, tmp_path / "split", steps=3, **common))
    summary = train(quick_config(assets, tmp_path / "split", resume="auto", **common))
    assert summary["history"][0]["step"] == 4  # it continued, not restarted
    step_a, a = unet_weights(tmp_path / "straight")
    step_b, b = unet_weights(tmp_path / "split")
    assert step_a == step_b == 6
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    losses_a = [r["loss"] for r in read_metrics(tmp_path / "straight")]
    losses_b = [r["loss"] for r in read_metrics(tmp_path / "split")]
    assert losses_a == pytest.approx(losses_b, abs=1e-6)
    # and training changed the weights
    from diffusers import UNet2DConditionModel

    init = UNet2DConditionModel.from_pretrained(str(assets["model"]), subfolder="unet").state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-4


def test_precompute_then_train_from_latents_and_export_generates(assets, tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    from dftrain.shards import Manifest
    from dftrain.train.data import LATENTS_FIELD, load_latents_field
    from dftrain.train.precompute import precompute

    result = precompute(assets["model"], assets["shards"], tmp_path / "lat", objects=assets["objects"],
                        objects_out=tmp_path / "lat_obj", batch_size=4, rank=0, world_size=1, text_states=True)
    assert result["train"]["manifest"] and result["objects"]["manifest"]
    manifest = Manifest.load(tmp_path / "lat")
    assert manifest.kind == "latents" and manifest.total_samples == 8 and manifest.extra["flip"] is True
    from dftrain.shards import iter_samples

    sample = next(iter_samples(tmp_path / "lat", rank=0, world_size=1, decode=False, require=(LATENTS_FIELD,)))
    tensors = load_latents_field(sample[LATENTS_FIELD])
    assert tensors["latent"].shape == (4, 8, 8) and tensors["latent_flip"].shape == (4, 8, 8)
    import json

    width = json.loads((assets["model"] / "text_encoder" / "config.json").read_text())["hidden_size"]
    assert tensors["text_states"].shape == (77, width)

    in_process_env(monkeypatch)
    cfg = quick_config(assets, tmp_path / "run", shards=str(tmp_path / "lat"), objects=str(tmp_path / "lat_obj"),
                       steps=4, precision="bf16", ema=True, ema_decay=0.9, prediction_type="v_prediction")
    summary = train(cfg)
    assert summary["step"] == 4 and (tmp_path / "run" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(summary["pipeline"])
    image = pipe("a red circle", num_inference_steps=2, height=32, width=32,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)
    import numpy as np

    assert np.asarray(image).std() > 0  # an actual picture, not a constant
    # the run trained v-prediction: the exported scheduler samples with it
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert summary["history"][-1]["step"] == 4

    # `dftrain export` from the run folder: the raw (non-EMA) weights on request; refuses to overwrite
    from typer.testing import CliRunner

    from dftrain.cli import app

    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "exp"), "--no-ema"])
    assert result.exit_code == 0, result.output
    exported = StableDiffusionPipeline.from_pretrained(str(tmp_path / "exp")).unet.state_dict()
    step, trained = unet_weights(tmp_path / "run")
    assert step == 4 and all(torch.equal(exported[k], trained[k]) for k in trained)
    ema_weights = pipe.unet.state_dict()
    assert any(not torch.equal(ema_weights[k], trained[k]) for k in trained)  # EMA differs from raw weights
    again = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "exp")])
    assert again.exit_code != 0 and "not empty" in str(again.exception)


def test_deepspeed_launcher_local_rank_is_stripped():
    from dftrain.distributed import split_local_rank

    assert split_local_rank(["--local_rank=3", "--steps", "2"]) == (["--steps", "2"], "3")
    assert split_local_rank(["--out", "x", "--local-rank", "1"]) == (["--out", "x"], "1")
    assert split_local_rank(["--steps", "2"]) == (["--steps", "2"], None)


def test_the_deepspeed_launchers_command_shape_reaches_train():
    """`deepspeed --module dftrain train ...` runs `python -u -m dftrain --local_rank=N train ...`
    (deepspeed/launcher/launch.py): the rank flag comes before the subcommand."""
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-u", "-m", "dftrain", "--local_rank=1", "train", "--help"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--micro-batch-size" in shown.stdout, shown.stderr[-2000:]


def test_precompute_rerun_skips_finished_shards_and_redoes_changed_ones(assets, tmp_path, caplog):
    import logging

    from dftrain.shards import Manifest
    from dftrain.train.precompute import precompute

    precompute(assets["model"], assets["shards"], tmp_path / "lat", batch_size=8, rank=0, world_size=1)
    first = Manifest.load(tmp_path / "lat")
    with caplog.at_level(logging.INFO, logger="dftrain.precompute"):
        precompute(assets["model"], assets["shards"], tmp_path / "lat", batch_size=8, rank=0, world_size=1)
    assert caplog.text.count("already done: skipped") == len(first.shards)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dftrain.precompute"):
        result = precompute(assets["model"], assets["shards"], tmp_path / "lat", flip=False, batch_size=8, rank=0, world_size=1)
    assert "already done" not in caplog.text and result["train"]["samples"] == first.total_samples
    assert Manifest.load(tmp_path / "lat").extra["flip"] is False


def test_generation_defaults_to_the_training_resolution(assets, tmp_path, monkeypatch):
    """A model whose UNet is native at 64 px, trained at 32 px, is sampled at 32 px by default."""
    import json

    from dftrain.evaluate.generate import GenerateOptions, generate
    from dftrain.model import build_tiny_pipeline

    native64 = build_tiny_pipeline(tmp_path / "model64", resolution=64, vae_steps=0)
    in_process_env(monkeypatch)
    summary = train(quick_config({**assets, "model": native64}, tmp_path / "run", steps=2, resolution=32, fusion="none"))
    info = json.loads((tmp_path / "run" / "pipeline" / "dftrain_export.json").read_text())
    assert info["resolution"] == 32
    generate(summary["pipeline"], assets["shards"], tmp_path / "gen", GenerateOptions(num_prompts=1, steps=1))
    from PIL import Image

    assert Image.open(next((tmp_path / "gen").glob("*.png"))).size == (32, 32)
    # an explicit --resolution still wins
    generate(summary["pipeline"], assets["shards"], tmp_path / "gen48",
             GenerateOptions(num_prompts=1, steps=1, resolution=48))
    assert Image.open(next((tmp_path / "gen48").glob("*.png"))).size == (48, 48)


def test_training_on_shards_whose_images_all_fail_to_decode_stops_with_one_line(assets, tmp_path, monkeypatch):
    """It used to loop over the epochs forever, logging one warning per sample (issue 14)."""
    import io

    import numpy as np
    from PIL import Image

    from dftrain.errors import DftrainError
    from dftrain.shards import ShardWriter

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(buffer, "JPEG")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]  # a valid header, then the data stops
    broken = tmp_path / "broken"
    with ShardWriter(broken, samples_per_shard=4, kind="train") as writer:
        for i in range(6):
            writer.write({"__key__": f"{i:09d}", "jpg": truncated, "txt": f"a cat {i}"})
    in_process_env(monkeypatch)
    with pytest.raises(DftrainError, match=r"none of its 6 training samples .* could be used .*undecodable image: 6"):
        train(quick_config(assets, tmp_path / "run", shards=str(broken), fusion="none", export=False))


def test_precompute_redoes_shards_after_their_content_or_the_encoder_changed(assets, tmp_path, caplog):
    """Reuse used to be keyed on the input's path and byte size (tars are padded: sizes match) and
    ignored the model (issue 14)."""
    import logging
    import shutil

    from train_helpers import build_test_shards

    from dftrain.shards import Manifest
    from dftrain.train.precompute import precompute

    model = tmp_path / "model"
    shutil.copytree(assets["model"], model)
    shards, _ = build_test_shards(tmp_path / "data")
    precompute(model, shards, tmp_path / "lat", batch_size=8, rank=0, world_size=1)
    n_shards = len(Manifest.load(tmp_path / "lat").shards)

    def reruns() -> int:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dftrain.precompute"):
            precompute(model, shards, tmp_path / "lat", batch_size=8, rank=0, world_size=1)
        return caplog.text.count("encoding again")

    assert reruns() == 0
    before = {s.name: s.bytes for s in Manifest.load(shards).shards}
    shutil.rmtree(shards)
    rebuilt, _ = build_test_shards(tmp_path / "data")  # rebuilt: new files and time stamps, same content
    assert {s.name: s.bytes for s in Manifest.load(rebuilt).shards} == before
    assert reruns() == 0  # the same content rebuilt is still the same content

    from dftrain.shards import ShardWriter
    from dftrain.synthetic import synthetic_train_samples

    shutil.rmtree(shards)
    with ShardWriter(shards, samples_per_shard=4, kind="train") as writer:  # other seed: other content
        for sample in synthetic_train_samples(8, 32, 0.0, 1):
            writer.write(sample)
    assert reruns() == n_shards

    from safetensors.torch import load_file, save_file

    weights = next((model / "vae").glob("*.safetensors"))
    state = load_file(weights)
    save_file({k: v + 0.01 for k, v in state.items()}, weights)  # other VAE weights, same folder
    assert reruns() == n_shards
    assert reruns() == 0


def test_latents_without_text_states_train_with_the_caption_encoded_in_the_step(assets, tmp_path, monkeypatch):
    """The default: latents only (text states are ~5x their bytes at SD 2.x); caption text stays
    trainable, so tail_add fusion and the text mitigations work from latents."""
    from dftrain.errors import ConfigError
    from dftrain.shards import Manifest, iter_samples
    from dftrain.train.config import validate
    from dftrain.train.data import LATENTS_FIELD, load_latents_field
    from dftrain.train.precompute import precompute

    for name, with_text in (("lean", False), ("full", True)):
        precompute(assets["model"], assets["shards"], tmp_path / name, objects=assets["objects"],
                   objects_out=tmp_path / f"{name}_obj", batch_size=4, rank=0, world_size=1, text_states=with_text)
    lean, full = Manifest.load(tmp_path / "lean"), Manifest.load(tmp_path / "full")
    assert lean.extra["text_states"] is False and full.extra["text_states"] is True
    sample = next(iter_samples(tmp_path / "lean", rank=0, world_size=1, decode=False, require=(LATENTS_FIELD,)))
    stored = load_latents_field(sample[LATENTS_FIELD])
    assert set(stored) == {"latent", "latent_flip", "latent_std", "latent_flip_std"} and sample["txt"]
    assert (stored["latent_std"].float() > 0).all()  # the posterior's std: the step samples it
    bank_sample = next(iter_samples(tmp_path / "lean_obj", rank=0, world_size=1, decode=False, require=(LATENTS_FIELD,)))
    # objects: mean, std and the mirror's, so the step samples and flips them as the paper does
    assert set(load_latents_field(bank_sample[LATENTS_FIELD])) == {"latent", "latent_flip", "latent_std",
                                                                   "latent_flip_std"}
    assert Manifest.load(tmp_path / "lean_obj").extra["posterior_std"] is True
    assert sum(s.bytes for s in lean.shards) < sum(s.bytes for s in full.shards)

    text_level = dict(fusion="dual", caption_fusion="tail_add", word_repeat=True, text_mitigation_p=1.0,
                      steps=2, export=False)
    with pytest.raises(ConfigError, match="precompute without --text-states"):
        validate(quick_config(assets, tmp_path / "no", shards=str(tmp_path / "full"),
                              objects=str(tmp_path / "full_obj"), **text_level))
    in_process_env(monkeypatch)
    summary = train(quick_config(assets, tmp_path / "run", shards=str(tmp_path / "lean"),
                                 objects=str(tmp_path / "lean_obj"), **text_level))
    assert summary["step"] == 2 and all(r["loss"] == r["loss"] for r in summary["history"])
    # an object bank precomputed before it kept the std: one line, unless the mean is asked for
    old_bank = Manifest.load(tmp_path / "lean_obj")
    old_bank.extra["posterior_std"] = False
    old_bank.save(tmp_path / "lean_obj")
    old_options = dict(shards=str(tmp_path / "lean"), objects=str(tmp_path / "lean_obj"), fusion="dual")
    with pytest.raises(ConfigError, match="precomputed without the posterior std.*--object-latent mean"):
        validate(quick_config(assets, tmp_path / "old", **old_options))
    validate(quick_config(assets, tmp_path / "old", object_latent="mean", **old_options))


def test_an_object_bank_over_the_memory_cap_is_encoded_once_into_a_mapped_file(assets, tmp_path):
    """It used to be VAE-encoded again at every draw once its latents exceeded --object-cache-mb."""
    from dftrain.train.data import ObjectBank, object_views

    calls = []

    def encode(pixels):  # a stand-in encoder: deterministic, latent-shaped (mean, std)
        calls.append(len(pixels))
        return pixels[:, :, ::4, ::4] * 0.5, pixels[:, :, 1::4, 1::4].abs() + 0.1

    in_ram, mapped = (ObjectBank(assets["objects"], precomputed=False, resolution=32) for _ in range(2))
    shape = (3, 8, 8)
    views = object_views(flip=True, posterior=True)
    assert views == ("latent", "latent_std", "latent_flip", "latent_flip_std")
    assert in_ram.cache_latents(encode, max_bytes=1 << 30, latent_shape=shape, views=views)
    encoded_in_ram = sum(calls)
    calls.clear()
    spill = tmp_path / "spill"
    assert mapped.cache_latents(encode, max_bytes=16, latent_shape=shape, batch_size=3, spill_dir=spill, views=views)
    assert sum(calls) == 2 * len(mapped) == encoded_in_ram  # every object once, and its mirror image once
    assert list(spill.iterdir()) == []  # the file is unlinked; the mapping keeps it alive
    indices = torch.tensor([0, len(mapped) - 1, 1])
    flips = torch.tensor([True, False, True])
    for name in ("latent", "latent_std"):
        assert torch.equal(mapped.cached_latents(indices, flips, name), in_ram.cached_latents(indices, flips, name))
    pixels = mapped.pixels(indices)
    mean, std = encode(pixels)
    mirror_mean, _ = encode(pixels.flip(-1))
    got = mapped.cached_latents(indices, flips)
    assert torch.equal(got[1], mean[1].half().float()) and torch.equal(got[0], mirror_mean[0].half().float())
    assert torch.equal(mapped.cached_latents(indices, flips * False, "latent_std"), std.half().float())
    calls.clear()
    mapped.cached_latents(torch.arange(len(mapped)))
    assert calls == []  # drawing never encodes again
    without_spill = ObjectBank(assets["objects"], precomputed=False, resolution=32)
    assert not without_spill.cache_latents(encode, max_bytes=16, latent_shape=shape)  # per draw, as before


def test_training_with_a_zero_object_cache_maps_the_bank_from_the_run_folder(assets, tmp_path, monkeypatch, caplog):
    import logging

    in_process_env(monkeypatch)
    with caplog.at_level(logging.INFO, logger="dftrain.train"):
        summary = train(quick_config(assets, tmp_path / "run", steps=2, object_cache_mb=0, fusion="dual", export=False))
    assert summary["step"] == 2
    assert f"memory-mapped from {tmp_path / 'run' / '.object-latents'}" in caplog.text


def test_precomputed_latents_are_sampled_from_the_stored_posterior():
    """mean + std * noise from the batch generator (the paper trains on posterior samples); the mirror's own
    mean and std when flipped; the mean alone for latents folders written without std."""
    import random
    from types import SimpleNamespace

    from dftrain.train.batch import BatchBuilder, precomputed_view

    mean, std = torch.full((4, 2, 2), 1.0), torch.full((4, 2, 2), 0.5)
    example = {"latent": mean, "latent_std": std, "latent_flip": mean + 10, "latent_flip_std": std * 2}
    assert torch.equal(precomputed_view(example, "latent_std", True), std * 2)
    assert torch.equal(precomputed_view({"latent": torch.arange(4.0).view(1, 2, 2)}, "latent", True),
                       torch.tensor([[[1.0, 0.0], [3.0, 2.0]]]))
    cfg = SimpleNamespace(fusion="none", random_flip=False, w_lat=0.1, object_cache_mb=0, out=None)
    components = SimpleNamespace(tokenizer=None)

    def latents(examples, seed):
        builder = BatchBuilder(cfg, components, None, device=torch.device("cpu"),
                               generator=torch.Generator().manual_seed(seed), rng=random.Random(0), precomputed=True)
        return builder.latents(examples, None)

    z = latents([example] * 64, 0)
    expected_noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z, mean + std * expected_noise)
    assert not torch.equal(z, latents([example] * 64, 1))
    assert torch.equal(latents([{"latent": mean}], 0)[0], mean)  # no std stored: the mean, as before


def test_precompute_refuses_an_output_folder_it_did_not_make(assets, tmp_path):
    from dftrain.errors import DftrainError
    from dftrain.train.precompute import precompute

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("someone's data")
    with pytest.raises(DftrainError, match="theirs"):
        precompute(assets["model"], assets["shards"], theirs, batch_size=8, rank=0, world_size=1)
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"]
    result = precompute(assets["model"], assets["shards"], theirs, batch_size=8, rank=0, world_size=1, overwrite=True)
    assert result["train"]["manifest"] and (theirs / "notes.txt").is_file()


def test_decoding_workers_give_the_same_training_and_resume_exactly(assets, tmp_path, monkeypatch, caplog):
    """--num-workers 2 decodes in other processes, ahead of the step: the same batches as 0 workers
    (same loss sequence and weights, fp32), and an interrupted run with workers resumes to the same weights."""
    import logging

    in_process_env(monkeypatch)
    common = dict(export=False, steps=6, checkpoint_every=3, fusion="dual", zero_stage=0)
    train(quick_config(assets, tmp_path / "inline", num_workers=0, **common))
    with caplog.at_level(logging.INFO, logger="dftrain.train"):
        train(quick_config(assets, tmp_path / "workers", num_workers=2, **common))
    assert "decoding images in 2 worker processes" in caplog.text
    train(quick_config(assets, tmp_path / "split", num_workers=2, **{**common, "steps": 3}))
    train(quick_config(assets, tmp_path / "split", num_workers=2, resume="auto", **common))
    losses = {name: [r["loss"] for r in read_metrics(tmp_path / name)] for name in ("inline", "workers", "split")}
    assert losses["workers"] == losses["inline"] == losses["split"]
    weights = {name: unet_weights(tmp_path / name)[1] for name in losses}
    for name in ("workers", "split"):
        assert max((weights[name][k] - weights["inline"][k]).abs().max().item() for k in weights["inline"]) == 0
