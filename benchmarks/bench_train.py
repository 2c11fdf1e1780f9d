"""Trainer throughput on this machine (tiny model, CPU): samples/s and memory.

    .venv/bin/python -m benchmarks.bench_train          # default size (a few minutes)
    .venv/bin/python -c "from benchmarks.bench_train import main; main(quick=True)"

Compared side by side, same process, same data:
- on-the-fly encoding (VAE + text encoder in the step) vs precomputed latents  (goal >= 1.4x)
- fusion dual vs none, with precomputed latents and on the fly                  (goal < 5% overhead)
- 1 rank vs 2 ranks (torchrun, gloo), ZeRO-2
- ZeRO 1 / 2 / 3 with 2 ranks: step time and peak memory per rank (RSS on CPU)
- decoding 256-px JPEGs in the training process (--num-workers 0) vs in 1 and 2 worker processes, 1 rank,
  run in turn (0, 1, 2, 0, 1, 2, ...) on the shared machine, with the load average of each run; and the
  input pipeline alone (no model): wall and training-process CPU per sample               (goal >= 1.3x)
  (the same with 1024-px JPEGs, where decoding is a large share of the step)
- precompute bytes per sample with and without --text-states (from the manifests and tars)
Timings skip the first steps (warm-up). Results: benchmarks/results/train.json
(`--decode-only`: the last two only, in benchmarks/results/train_decode.json).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "train.json"
DECODE_RESULTS = REPO / "benchmarks" / "results" / "train_decode.json"
DECODE_SIZE = 256  # px of the JPEGs in the decoding comparison
HEAVY_DECODE_SIZE = 1024  # the same with decoding a large share of the step: shows what overlap gives


def build_assets(root: Path, resolution: int) -> dict[str, Path]:
    """Model + 64 training images + object bank (+ their precomputed latents)."""
    sys.path.insert(0, str(REPO / "tests"))
    from train_helpers import build_test_pipeline, build_test_shards

    from dftrain.train.precompute import precompute

    model = root / "model"
    try:
        from dftrain.model import build_tiny_pipeline

        build_tiny_pipeline(model, resolution=resolution, vae_steps=0)  # the embedded tiny model (weights irrelevant here)
        model_name = f"dftrain tiny pipeline ({resolution} px)"
    except Exception as exc:  # noqa: BLE001 - fall back to the test model if the preset is unavailable
        print(f"note: tiny preset unavailable ({exc}); using the test pipeline (32 px)")
        build_test_pipeline(model)
        model_name, resolution = "test pipeline (32 px)", 32
    train, objects = build_test_shards(root / "data", n_train=64, n_per_class=4, samples_per_shard=16, size=resolution)
    # with text states: the comparison is "both encoders out of the step" (the default stores latents only)
    precompute(model, train, root / "lat", objects=objects, objects_out=root / "lat_obj", rank=0, world_size=1,
               text_states=True)
    return {"model": model, "shards": train, "objects": objects, "lat": root / "lat", "lat_obj": root / "lat_obj",
            "model_name": model_name, "resolution": resolution}


def args_for(assets, out: Path, *, latents: bool, fusion: str, steps: int, zero: int, batch: int) -> list[str]:
    shards, objects = (assets["lat"], assets["lat_obj"]) if latents else (assets["shards"], assets["objects"])
    return ["--model", str(assets["model"]), "--shards", str(shards), "--objects", str(objects), "--out", str(out),
            "--fusion", fusion, "--steps", str(steps), "--micro-batch-size", str(batch), "--lr", "1e-4",
            "--warmup-steps", "0", "--precision", "fp32", "--zero-stage", str(zero), "--log-every", "1",
            "--checkpoint-every", str(10**6), "--no-export", "--no-progress"]


def summarise(run_dir: Path, warmup: int, ranks: int) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = records[warmup:]
    step = statistics.median(r["step_time_s"] for r in timed)
    cpu = statistics.median(r["step_cpu_s"] for r in timed)
    global_batch = timed[-1]["samples"] // timed[-1]["step"]
    return {
        "steps_timed": len(timed), "median_step_s": round(step, 4), "samples_per_s": round(global_batch / step, 2),
        # rank 0's CPU seconds per step and a rank's samples per CPU second: less sensitive to other jobs
        "median_step_cpu_s": round(cpu, 4), "samples_per_cpu_s_per_rank": round(global_batch / ranks / cpu, 2),
        "peak_rss_mib_max_rank": round(max(r["memory_bytes_max_rank"] for r in timed) / 2**20, 1),
        "final_loss": round(timed[-1]["loss"], 4),
    }


def clean_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", PYTHONPATH=str(REPO))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def run_training(args: list[str], nproc: int) -> float:
    if nproc == 1:
        cmd = [sys.executable, "-m", "dftrain", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "dftrain", "train", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=clean_env(), cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def encoder_flop_share(preset: str, resolution: int) -> dict:
    """FLOPs per example (meta tensors, nothing allocated): VAE encoder, text encoder, UNet forward+backward.

    (unet + vae + text) / unet is the speedup precomputed latents can give when FLOPs set the pace.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextConfig, CLIPTextModel

    from dftrain.model import configs

    if preset == "sd21":
        unet_cfg, vae_cfg, text_cfg = configs.sd21_unet_config(base=True), configs.sd21_vae_config(), configs.sd21_text_config()
    else:
        text_cfg = configs.tiny_text_config(vocab_size=2048, bos_token_id=0, eos_token_id=1, pad_token_id=1)
        unet_cfg = configs.tiny_unet_config(resolution, text_cfg["hidden_size"])
        vae_cfg = configs.tiny_vae_config(resolution)
    factor = configs.vae_scale_factor(vae_cfg["block_out_channels"])
    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**unet_cfg), AutoencoderKL(**vae_cfg)
        text = CLIPTextModel(CLIPTextConfig(**text_cfg))
        pixels, ids = torch.randn(1, 3, resolution, resolution), torch.zeros(1, 77, dtype=torch.long)
        latents = torch.randn(1, 4, resolution // factor, resolution // factor)
        states, t = torch.randn(1, 77, text_cfg["hidden_size"]), torch.zeros(1, dtype=torch.long)

    def flops(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e9

    vae_gf = flops(lambda: vae.encode(pixels))
    text_gf = flops(lambda: text(ids))
    unet_gf = flops(lambda: unet(latents, t, encoder_hidden_states=states).sample.sum().backward())
    return {"resolution": resolution, "vae_encode_gflop": round(vae_gf, 2), "text_encode_gflop": round(text_gf, 2),
            "unet_fwd_bwd_gflop": round(unet_gf, 2), "projected_precompute_speedup": round((unet_gf + vae_gf + text_gf) / unet_gf, 3)}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def jpeg_shards(root: Path, size: int) -> Path:
    """64 photo-like `size`-px JPEGs with captions (benchmarks/bench_shards.py) as training shards."""
    from benchmarks.bench_shards import photo_samples
    from dftrain.shards import ShardWriter

    with ShardWriter(root, samples_per_shard=16, kind="train") as writer:
        for sample in photo_samples(64, size, seed=size):
            writer.write(sample)
    return root


def decode_workers_comparison(assets: dict, root: Path, *, steps: int, warmup: int, batch: int, rounds: int) -> dict:
    """samples/s of the same 1-rank run with 0, 1 and 2 decoding workers, run in turn `rounds` times."""
    runs: dict[str, list[dict]] = {"0": [], "1": [], "2": []}
    for round_ in range(rounds):
        for workers in runs:
            out = root / "runs" / f"decode_w{workers}_r{round_}"
            load_before = load_average()
            args = args_for(assets, out, latents=False, fusion="none", steps=steps, zero=2, batch=batch)
            wall = run_training([*args, "--num-workers", workers], 1)
            runs[workers].append({**summarise(out, warmup, 1), "wall_s_incl_startup": round(wall, 1),
                                  "load_avg_1min_before": load_before, "load_avg_1min_after": load_average()})
            print(f"decode workers {workers} round {round_}: {runs[workers][-1]}")
    def per_round(key: str, inverse: bool) -> dict[str, list[float]]:
        return {f"workers_{w}_vs_0": [round((a[key] / b[key]) if inverse else (b[key] / a[key]), 3)
                                      for a, b in zip(runs["0"], runs[w], strict=True)] for w in ("1", "2")}

    wall = per_round("samples_per_s", inverse=False)
    # the training process's CPU seconds per step (the workers' not counted): the step's critical path,
    # i.e. the speed-up where the workers find a free core; robust to the other jobs on the machine
    cpu = per_round("median_step_cpu_s", inverse=True)
    return {"runs": runs, "samples_per_s_ratio_per_round": wall,
            "samples_per_s_ratio_median": {k: round(statistics.median(v), 3) for k, v in wall.items()},
            "training_process_cpu_ratio_per_round": cpu,
            "training_process_cpu_ratio_median": {k: round(statistics.median(v), 3) for k, v in cpu.items()}}


def stream_profile(folder: Path, resolution: int, *, batches: int, batch: int, rounds: int) -> dict:
    """The input pipeline alone (TrainStream.next_batch, no model): ms per sample, wall and CPU of the
    training process (the workers' CPU not included), for 0, 1 and 2 workers, run in turn."""
    from dftrain.train.data import TrainStream

    result: dict[str, list[dict]] = {"0": [], "1": [], "2": []}
    for _ in range(rounds):
        for workers in result:
            stream = TrainStream(folder, rank=0, world_size=1, resolution=resolution, precomputed=False,
                                 num_workers=int(workers), shuffle_buffer=16)
            try:
                stream.next_batch(2 * batch)  # worker start-up
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(batches):
                    stream.next_batch(batch)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            finally:
                stream.close()
            n = batches * batch
            result[workers].append({"wall_ms_per_sample": round(1e3 * wall / n, 3), "cpu_ms_per_sample": round(1e3 * cpu / n, 3)})
    return {w: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for w, rows in result.items()}


def precompute_bytes(model: Path, train: Path, root: Path) -> dict:
    """Bytes per training sample of `dftrain precompute` output, default (latents only) vs --text-states:
    whole tars (manifest) and the latents.safetensors field alone."""
    from dftrain.shards import Manifest, iter_samples
    from dftrain.train.data import LATENTS_FIELD, load_latents_field, shard_paths
    from dftrain.train.precompute import precompute

    result = {}
    for name, text_states in (("latents_only", False), ("with_text_states", True)):
        out = root / f"bytes_{name}"
        precompute(model, train, out, rank=0, world_size=1, text_states=text_states)
        manifest = Manifest.load(out)
        fields = [s[LATENTS_FIELD] for s in iter_samples(shard_paths(out), decode=False, require=(LATENTS_FIELD,))]
        tensors = load_latents_field(fields[0])
        result[name] = {
            "tar_bytes_per_sample": round(manifest.total_bytes / manifest.total_samples),
            "latents_field_bytes_per_sample": round(sum(map(len, fields)) / len(fields)),
            "tensors": {k: list(v.shape) for k, v in tensors.items()}, "dtype": str(tensors["latent"].dtype),
        }
    result["text_states_vs_latents_only_tar_bytes"] = round(
        result["with_text_states"]["tar_bytes_per_sample"] / result["latents_only"]["tar_bytes_per_sample"], 2)
    return result


def sd21_precompute_bytes(resolution: int) -> dict:
    """Computed from the shapes, not measured: fp16 latent [4, R/8, R/8] as mean, std, and their flipped
    views; text states [77, 1024]."""
    latent = 4 * (resolution // 8) ** 2 * 2
    text = 77 * 1024 * 2
    return {"resolution": resolution, "latents_bytes": 4 * latent, "text_states_bytes": text,
            "with_text_states_vs_latents_only": round((4 * latent + text) / (4 * latent), 2)}


def decode_main(quick: bool = False, model: Path | None = None) -> dict:
    """The decoding comparison and the precompute sizes (also part of main())."""
    steps, warmup, batch, rounds = (8, 3, 4, 1) if quick else (30, 5, 4, 3)
    with tempfile.TemporaryDirectory(prefix="bench_train_decode_") as tmp:
        root = Path(tmp)
        if model is None:
            from dftrain.model import build_tiny_pipeline

            model = build_tiny_pipeline(root / "model", resolution=64, vae_steps=0)
        sys.path.insert(0, str(REPO / "tests"))
        from train_helpers import build_test_shards

        _, objects = build_test_shards(root / "small", n_train=4, n_per_class=2, size=64)  # --objects (unused: no fusion)
        result = {
            "setup": f"1 rank, tiny pipeline at 64 px, photo-like JPEG shards (64 images) resized to 64 px, fusion none, "
                     f"micro-batch {batch}, {steps} steps ({warmup} not timed), fp32; runs in turn 0, 1, 2 workers",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch CPU",
            "load_avg_1min_start": load_average(),
        }
        for size in (DECODE_SIZE, HEAVY_DECODE_SIZE):
            train = jpeg_shards(root / f"jpeg{size}", size)
            assets = {"model": model, "shards": train, "objects": objects}
            part = {
                "stream_alone": stream_profile(train, 64, batches=10 if quick else 40, batch=batch, rounds=rounds),
                "training": decode_workers_comparison(assets, root / f"runs{size}", steps=steps, warmup=warmup,
                                                      batch=batch, rounds=rounds),
            }
            # the most overlap can give: the step's CPU time less the decoding that the workers take away
            step_cpu = statistics.median(r["median_step_cpu_s"] for r in part["training"]["runs"]["0"])
            alone = part["stream_alone"]
            saved = batch * (alone["0"]["cpu_ms_per_sample"] - alone["1"]["cpu_ms_per_sample"]) / 1e3
            part["decoding_share_of_step"] = round(saved / step_cpu, 4)
            part["overlap_bound"] = round(step_cpu / max(step_cpu - saved, 1e-9), 3)
            result[f"jpeg_{size}px"] = part
            if size == DECODE_SIZE:
                result["precompute_bytes_tiny_64px"] = precompute_bytes(model, train, root)
        result["precompute_bytes_sd21"] = [sd21_precompute_bytes(r) for r in (256, 512)]
        result["load_avg_1min_end"] = load_average()
    return result


def main(quick: bool = False) -> dict:
    steps, warmup, batch = (8, 3, 4) if quick else (30, 5, 4)
    results: dict = {"quick": quick, "steps": steps, "warmup_steps_skipped": warmup, "micro_batch_per_rank": batch,
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch CPU, gloo",
                     "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        assets = build_assets(root, resolution=64)
        results["model"] = assets["model_name"]
        plan = {
            # name: (latents, fusion, zero stage, ranks)
            "onthefly_dual_1rank": (False, "dual", 2, 1),
            "onthefly_none_1rank": (False, "none", 2, 1),
            "latents_dual_1rank": (True, "dual", 2, 1),
            "latents_none_1rank": (True, "none", 2, 1),
            "latents_dual_2rank_zero1": (True, "dual", 1, 2),
            "latents_dual_2rank_zero2": (True, "dual", 2, 2),
            "latents_dual_2rank_zero3": (True, "dual", 3, 2),
        }
        for name, (latents, fusion, zero, nproc) in plan.items():
            out = root / "runs" / name
            wall = run_training(args_for(assets, out, latents=latents, fusion=fusion, steps=steps, zero=zero, batch=batch), nproc)
            results["runs"][name] = {**summarise(out, warmup, nproc), "ranks": nproc, "zero_stage": zero, "latents": latents,
                                     "fusion": fusion, "wall_s_incl_startup": round(wall, 1)}
            print(f"{name}: {results['runs'][name]}")
        results["decode_workers"] = decode_main(quick, model=assets["model"])
    r = {k: v["samples_per_s"] for k, v in results["runs"].items()}
    c = {k: v["samples_per_cpu_s_per_rank"] for k, v in results["runs"].items()}
    results["ratios_cpu_time"] = {
        "precomputed_vs_onthefly_dual": round(c["latents_dual_1rank"] / c["onthefly_dual_1rank"], 3),
        "fusion_overhead_latents": round(1 - c["latents_dual_1rank"] / c["latents_none_1rank"], 3),
        "fusion_overhead_onthefly": round(1 - c["onthefly_dual_1rank"] / c["onthefly_none_1rank"], 3),
    }
    results["ratios"] = {
        "precomputed_vs_onthefly_dual": round(r["latents_dual_1rank"] / r["onthefly_dual_1rank"], 3),
        "fusion_overhead_latents": round(1 - r["latents_dual_1rank"] / r["latents_none_1rank"], 3),
        "fusion_overhead_onthefly": round(1 - r["onthefly_dual_1rank"] / r["onthefly_none_1rank"], 3),
        "two_ranks_vs_one_zero2": round(r["latents_dual_2rank_zero2"] / r["latents_dual_1rank"], 3),
    }
    # Goals are judged on CPU time per sample: on a machine shared with other jobs, wall-clock
    # ratios of short runs swing by tens of percent (both are reported).
    results["goals"] = {
        "precomputed_speedup_ge_1.4 (cpu time)": results["ratios_cpu_time"]["precomputed_vs_onthefly_dual"] >= 1.4,
        "fusion_overhead_lt_5pct_latents (cpu time)": results["ratios_cpu_time"]["fusion_overhead_latents"] < 0.05,
        "fusion_overhead_lt_5pct_onthefly (cpu time)": results["ratios_cpu_time"]["fusion_overhead_onthefly"] < 0.05,
    }
    results["flop_projection"] = {"tiny_64px": encoder_flop_share("tiny", 64), "sd21_base_256px": encoder_flop_share("sd21", 256)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    if "--decode-only" in sys.argv:
        decoded = decode_main(quick="--quick" in sys.argv)
        DECODE_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        DECODE_RESULTS.write_text(json.dumps(decoded, indent=2) + "\n")
        print(json.dumps(decoded, indent=2))
    else:
        main(quick="--quick" in sys.argv)
