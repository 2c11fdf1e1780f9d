"""Bad configurations stop before any compute, with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from train_helpers import REPO, build_test_shards, cpu_env

from dftrain.errors import ConfigError
from dftrain.train.config import build_config, validate


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_config")
    train, objects = build_test_shards(root, n_train=4, n_per_class=1)
    model = root / "model"
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (model / sub).mkdir(parents=True)  # validation only looks at the layout
    return {"model": str(model), "shards": str(train), "objects": str(objects), "out": str(root / "run")}


def problems(paths, **overrides):
    with pytest.raises(ConfigError) as info:
        validate(build_config(None, {**paths, **overrides}))
    return str(info.value)


def test_valid_config_passes_and_reports_facts(paths):
    facts = validate(build_config(None, paths))
    assert facts["zero_stage"] == 2 and facts["precomputed"] is False and facts["train_kind"] == "train"


def test_unknown_zero_stage(paths, tmp_path):
    assert "--zero-stage: Input should be 0, 1, 2 or 3, got 4" in problems(paths, zero_stage=4)
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 7}}))
    assert "unknown ZeRO stage 7" in problems(paths, deepspeed=str(ds))


def test_a_packaged_deepspeed_config_by_name(paths):
    """`--deepspeed zero3` finds the config shipped inside the package (a non-editable install has it)."""
    facts = validate(build_config(None, {**paths, "deepspeed": "zero3"}))
    assert facts["zero_stage"] == 3
    assert "DeepSpeed config not found: zero9" in problems(paths, deepspeed="zero9")


def test_fusion_weights_outside_unit_interval(paths):
    assert "--w-lat: Input should be less than or equal to 1, got 1.5" in problems(paths, w_lat=1.5)
    assert "--w-lat: Input should be greater than or equal to 0, got -0.1" in problems(paths, w_lat=-0.1)
    assert "--w-emb" in problems(paths, w_emb=2.0)


def test_fusion_needs_an_object_bank(paths):
    message = problems(paths, objects=None)
    assert "--fusion dual needs an object bank" in message
    validate(build_config(None, {**paths, "objects": None, "fusion": "none"}))  # no fusion: fine


def test_missing_shard_folder_and_model(paths, tmp_path):
    assert f"shard folder not found: {tmp_path / 'nope'}" in problems(paths, shards=str(tmp_path / "nope"))
    assert "model folder not found" in problems(paths, model=str(tmp_path / "nomodel"))


def test_other_bad_options_are_all_listed(paths):
    message = problems(paths, fusion="triple", precision="fp8", lr_schedule="linear", steps=0, attention="flash")
    for part in ("--fusion: Input should be 'none', 'latent', 'caption' or 'dual', got 'triple'",
                 "--precision: Input should be", "--lr-schedule", "--steps: Input should be greater than or equal to 1",
                 "--attention"):
        assert part in message
    assert "\n" not in message  # all in one line


def test_yaml_config_and_flag_override(paths, tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("w-lat: 0.2\nsteps: 7\nfusion: latent\n")
    cfg = build_config(str(cfg_file), {**paths, "steps": 9, "w_lat": None})
    assert (cfg.w_lat, cfg.steps, cfg.fusion) == (0.2, 9, "latent")
    cfg_file.write_text("bogus_option: 1\n")
    with pytest.raises(ConfigError, match="unknown option 'bogus_option'"):
        build_config(str(cfg_file), paths)


def test_cli_fails_fast_without_deepspeed(paths):
    """The command exits 1 with one line, before DeepSpeed or any model is touched."""
    args = [sys.executable, "-m", "dftrain", "train", "--local_rank=0", *sum(([f"--{k}", v] for k, v in paths.items()), []),
            "--zero-stage", "5", "--w-lat", "3"]
    start = time.perf_counter()
    proc = subprocess.run(args, env=cpu_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "--zero-stage: Input should be 0, 1, 2 or 3, got 5" in proc.stderr and "--w-lat" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - start < 60


def test_gpu_only_options_are_refused_on_cpu(paths):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA machine: fp16 and xformers are allowed")
    message = problems(paths, precision="fp16", attention="xformers")
    assert "fp16 is not supported on CPU" in message and "xformers needs a CUDA GPU" in message


def test_text_options_refused_on_precomputed_text_states(paths, tmp_path):
    import shutil

    latents = tmp_path / "lat"
    shutil.copytree(paths["shards"], latents)
    manifest = json.loads((latents / "manifest.json").read_text())
    manifest["kind"] = "latents"
    (latents / "manifest.json").write_text(json.dumps(manifest))
    message = problems(paths, shards=str(latents), objects=paths["objects"], word_repeat=True, caption_fusion="tail_add")
    assert "--word-repeat" in message and "tail_add" in message
    assert "both be precomputed latents or both images" in message  # objects are still images


def test_tensorboard_without_the_package(paths):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed")
    assert "--tensorboard needs the tensorboard package" in problems(paths, tensorboard=True)


def test_yaml_values_are_read_as_their_option_types_or_refused_in_one_line(tmp_path):
    """YAML 1.1 reads `lr: 1e-3` as a string; `steps: "ten"` used to end in a TypeError (issue 14)."""

    good = tmp_path / "good.yaml"
    good.write_text("lr: 1e-3\nsteps: '20'\nw_lat: 1\nema: true\nprediction_type: null\n")
    cfg = build_config(str(good))
    assert (cfg.lr, cfg.steps, cfg.w_lat, cfg.ema, cfg.prediction_type) == (1e-3, 20, 1.0, True, None)
    assert isinstance(cfg.lr, float) and isinstance(cfg.steps, int) and isinstance(cfg.w_lat, float)

    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: ten\nema: 'yes'\nlr: 0.001\nmicro_batch_size: true\n")
    with pytest.raises(ConfigError) as refused:
        build_config(str(bad))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{bad}: ")
    for part in ("steps: Input should be a valid integer, unable to parse string as an integer, got 'ten'",
                 "ema: Input should be a valid boolean, got 'yes'",
                 "micro_batch_size: expected a number, got a boolean, got True"):
        assert part in message
    assert "lr" not in message.replace("lr:", "")  # the good value is not reported

    switch = tmp_path / "switch.yaml"
    switch.write_text("word_repeat: 2\n")  # an old count where a switch is now
    with pytest.raises(ConfigError, match="word_repeat: Input should be a valid boolean, got 2"):
        build_config(str(switch))


@pytest.mark.parametrize("flags", [{"w_lat": float("nan")}, {"lr": float("inf")}, {"lr": float("nan")}])
def test_nan_and_inf_are_refused_before_anything_loads(tmp_path, flags):
    """They used to train to NaN and exit 0 (--w-lat nan, --lr inf), or fail after the models loaded (issue 14)."""
    (name,) = flags
    with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')}: Input should be a finite number"):
        build_config(None, {"model": str(tmp_path), "shards": str(tmp_path), "out": str(tmp_path / "run"), **flags})


def test_a_shard_folder_without_manifest_is_refused_not_globbed(tmp_path):
    """An interrupted build leaves tars and no manifest; training used to take whatever tars were there."""
    train, objects = build_test_shards(tmp_path / "data")
    (train / "manifest.json").unlink()
    cfg = build_config(None, {"model": str(tmp_path), "shards": str(train), "objects": str(objects),
                              "out": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match=f"no manifest.json in {train}: not a finished shard folder"):
        validate(cfg)
    from dftrain.train.data import shard_paths

    with pytest.raises(ConfigError, match="no manifest.json"):
        shard_paths(train)
