"""`dftrain precompute`: encode VAE latents (and, when asked, text-encoder states) once, into shards.

Output folder (manifest kind "latents"), one output shard per input shard, same names.
Each sample keeps `__key__`, `txt`, `json` (and `cls` for object banks) and adds
`latents.safetensors`, a safetensors blob with:

  latent       [C, h, w]  VAE latent-distribution mean x scaling_factor (what the UNet sees)
  latent_flip  [C, h, w]  the same for the horizontally flipped image (when --random-flip; object
                          banks too: their images are flipped like training images)
  latent_std, latent_flip_std
               [C, h, w]  the posterior's std x scaling_factor (training sets and object banks): the
                          step samples mean + std * noise, as training from images does (the paper's)
  text_states  [T, D]     text-encoder last hidden states of the chosen caption (training sets, only
                          with --text-states: [77, 1024] fp16 is ~154 KiB per sample for SD 2.x, about
                          5x the latents, while the text encoder is ~8% of the UNet's FLOPs; without
                          them training encodes the kept caption in the step, and the text-level
                          mitigations and tail_add fusion stay available)

stored in --dtype (fp16 by default). manifest extra: resolution, scaling_factor, flip,
caption_field, dtype, model, source. Ranks split the input shards (shard i -> rank i % w);
finished output shards are skipped on a rerun, and the manifest is written when every
shard exists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from dftrain.distributed import split_for_rank
from dftrain.dtypes import torch_dtype
from dftrain.errors import DftrainError
from dftrain.progress import progress as show_progress
from dftrain.train.data import LATENTS_FIELD, decode_image, pick_caption, shard_paths

log = logging.getLogger("dftrain.precompute")

STORAGE_DTYPES = ("fp16", "bf16", "fp32")  # names as recorded in the reuse key


def encode_latent_blob(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> bytes:
    from safetensors.torch import save

    return save({k: v.to(dtype).contiguous() for k, v in tensors.items()})


def _batches(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Encoder:
    """The frozen VAE and text encoder of a pipeline folder, on the best device available."""

    def __init__(self, model: str | Path, *, with_text: bool, resolution: int | None):
        from dftrain.train.models import load_text_encoder, load_vae

        self.device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.vae = load_vae(model, self.device, dtype)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.tokenizer, self.text_encoder = load_text_encoder(model, self.device, dtype) if with_text else (None, None)
        if resolution is None:
            from diffusers import UNet2DConditionModel

            unet_config = UNet2DConditionModel.load_config(str(model), subfolder="unet")
            sample = unet_config["sample_size"]
            resolution = int(sample[0] if isinstance(sample, list) else sample) * 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = resolution

    @torch.no_grad()
    def posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the VAE's latent distribution, both x scaling factor."""
        dist = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
        return dist.mean.float().cpu() * self.scaling_factor, dist.std.float().cpu() * self.scaling_factor

    @torch.no_grad()
    def text(self, captions: list[str]) -> torch.Tensor:
        from dftrain.train.models import tokenize

        ids = tokenize(self.tokenizer, captions).to(self.device)
        return self.text_encoder(ids)[0].float().cpu()


def encode_shard_samples(
    raw_samples: Iterator[dict], enc: Encoder, *, objects: bool, flip: bool, caption_field: str,
    batch_size: int, dtype: torch.dtype, skipped: list[str], text_states: bool = False,
) -> Iterator[dict]:
    for batch in _batches(raw_samples, batch_size):
        good, pixels = [], []
        for sample in batch:
            try:
                pixels.append(decode_image(sample["jpg"], enc.resolution))
                good.append(sample)
            except Exception as exc:  # PIL raises many types
                log.warning("skipped sample %s: undecodable image (%s)", sample.get("__key__"), exc)
                skipped.append(str(sample.get("__key__")))
        if not good:
            continue
        px = torch.stack(pixels)
        # every sample keeps the posterior's std, so the step samples it as on-the-fly training does
        # (object latents too: the paper samples them, --object-latent mean uses the mean alone)
        z, z_std = enc.posterior(px)
        z_flip, z_flip_std = enc.posterior(px.flip(-1)) if flip else (None, None)
        states = enc.text([pick_caption(s, caption_field) for s in good]) if text_states and not objects else None
        for i, sample in enumerate(good):
            tensors = {"latent": z[i], "latent_std": z_std[i]}
            if z_flip is not None:
                tensors["latent_flip"], tensors["latent_flip_std"] = z_flip[i], z_flip_std[i]
            if states is not None:
                tensors["text_states"] = states[i]
            out = {"__key__": sample["__key__"], LATENTS_FIELD: encode_latent_blob(tensors, dtype)}
            for field in ("txt", "json", "cls"):
                if field in sample:
                    out[field] = sample[field]
            yield out


def precompute_folder(
    source: str | Path, out: str | Path, enc: Encoder, *, objects: bool, flip: bool, caption_field: str = "txt",
    batch_size: int = 16, dtype: str = "fp16", rank: int = 0, world_size: int = 1, command: str = "",
    progress: bool = True, encoder_id: dict | None = None, text_states: bool = False, overwrite: bool = False,
) -> dict:
    """Encode one shard folder. A finished output shard is reused only when it was made from the same
    input content (the input shard's sha256 in its manifest), the same encoder weights (`encoder_id`)
    and the same settings; paths and sizes do not count (tars are padded, so sizes often match)."""
    from dftrain.outputs import claim_output
    from dftrain.shards import Manifest, ShardInfo, SkipStats, iter_samples, write_shard
    from dftrain.shards.inputs import shard_set

    out = Path(out)
    if dtype not in STORAGE_DTYPES:
        raise DftrainError(f"--dtype must be one of {', '.join(STORAGE_DTYPES)}")
    shard_paths(source)  # refuses a folder without manifest (ConfigError), and an empty one
    inputs = shard_set(source)  # one output shard per input shard, under its name unique in the set
    mine = split_for_rank(list(inputs.members), rank, world_size)
    sizes = {m.name: m.info.samples for m in inputs.members}
    with claim_output(out, "precompute", overwrite=overwrite, scope=f"rank{rank}"), \
            show_progress("precompute objects" if objects else "precompute", sum(sizes[m.name] for m in mine),
                          unit="samples", enabled=progress and rank == 0) as shown:
        stats, skipped, written = SkipStats(), [], 0
        for member in mine:
            path = member.path
            target = out / member.name
            info_file = out / f".{member.name}.info.json"
            source_id = {"input_sha256": member.info.sha256, "encoder": encoder_id, "resolution": enc.resolution,
                         "flip": flip, "caption_field": caption_field, "dtype": dtype,
                         "text_states": text_states and not objects}
            if objects:  # object shards from before held the mean alone: made again
                source_id["posterior_std"] = True
            if target.is_file() and info_file.is_file():
                if json.loads(info_file.read_text()).get("made_from") == source_id:
                    log.info("%s already done: skipped", target)
                    shown.skip(sizes[member.name])
                    continue
                log.info("%s was made from other input or settings: encoding again", target)
            raw = iter_samples([path], rank=0, world_size=1, decode=False, require=("jpg",) if objects else ("jpg", "txt"), stats=stats)
            info = write_shard(target, shown.counting(encode_shard_samples(
                raw, enc, objects=objects, flip=flip, caption_field=caption_field,
                batch_size=batch_size, dtype=torch_dtype(dtype), skipped=skipped, text_states=text_states,
            )))
            info_file.write_text(json.dumps({"name": info.name, "samples": info.samples, "sha256": info.sha256,
                                             "bytes": info.bytes, "made_from": source_id}))
            written += info.samples
        infos = [out / f".{m.name}.info.json" for m in inputs.members]
        manifest_written = False
        if all(f.is_file() for f in infos):
            shards = [ShardInfo.from_dict({k: v for k, v in json.loads(f.read_text()).items() if k != "made_from"}) for f in infos]
            Manifest(kind="latents", shards=shards, command=command, extra={
                "resolution": enc.resolution, "scaling_factor": enc.scaling_factor, "flip": flip,
                "caption_field": None if objects else caption_field, "dtype": dtype,
                "source": str(inputs.folders[0]) if len(inputs.folders) == 1 else [str(f) for f in inputs.folders],
                "source_kind": inputs.kind, "objects": objects, "text_states": text_states and not objects,
                "posterior_std": True,
            }).save(out)
            manifest_written = True
        return {"out": str(out), "samples": written, "skipped": len(skipped) + stats.total_skipped, "manifest": manifest_written}


def encoder_identity(model: str | Path, parts: tuple[str, ...]) -> dict[str, str]:
    """Content digest of each model part an encoding depends on (weights and configs, not paths)."""
    from dftrain.fingerprint import tree_sha256

    return {part: tree_sha256(Path(model) / part) for part in parts if (Path(model) / part).exists()}


def precompute(
    model: str | Path, shards: str | Path, out: str | Path, *, objects: str | Path | None = None,
    objects_out: str | Path | None = None, resolution: int | None = None, flip: bool = True,
    caption_field: str = "txt", batch_size: int = 16, dtype: str = "fp16", rank: int | None = None,
    world_size: int | None = None, command: str = "", text_states: bool = False, overwrite: bool = False,
) -> dict:
    """Encode the training shards (and the object bank) into latent shards."""
    from dftrain.distributed import rank_info

    for folder in (model, objects):
        if folder is not None and not Path(folder).is_dir():
            raise DftrainError(f"folder not found: {folder}")
    shard_paths(shards)  # the shard inputs are checked before the model loads
    info = rank_info(rank, world_size)
    enc = Encoder(model, with_text=text_states, resolution=resolution)
    result = {"train": precompute_folder(
        shards, out, enc, objects=False, flip=flip, caption_field=caption_field, batch_size=batch_size,
        dtype=dtype, rank=info.rank, world_size=info.world_size, command=command,
        encoder_id=encoder_identity(model, ("vae", "text_encoder", "tokenizer") if text_states else ("vae",)),
        text_states=text_states, overwrite=overwrite,
    )}
    if objects is not None:
        objects_out = objects_out or Path(out).parent / f"{Path(out).name}-objects"
        result["objects"] = precompute_folder(
            objects, objects_out, enc, objects=True, flip=flip, batch_size=batch_size, dtype=dtype,
            rank=info.rank, world_size=info.world_size, command=command,
            encoder_id=encoder_identity(model, ("vae",)), overwrite=overwrite,
        )
    return result
