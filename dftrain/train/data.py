"""Training examples and the object bank, read from shards through dftrain.shards.

Two kinds of shard folders (manifest "kind"):
- images (train / objects / generalized): `jpg` decoded, resized, centre-cropped, in [-1, 1];
- precomputed latents (kind "latents", written by `dftrain precompute`): the field
  `latents.safetensors` holds `latent` [C, h, w] (already multiplied by the VAE scaling
  factor), `latent_flip` when flips were precomputed, and `text_states` [T, D] for
  training samples.

The training stream is deterministic for a given (seed, rank, world size), so a resumed run
can skip to the recorded position (epoch, index) and see exactly the same examples.
The object bank is read once into memory at start-up (no directory scans per draw), with every
class's synonyms (json `class_synonyms`, or a comma-separated `class_name` as in words.txt).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from dftrain.errors import ConfigError, DftrainError
from dftrain.train.input_pipeline import crop_image

log = logging.getLogger("dftrain.train")

LATENTS_FIELD = "latents.safetensors"


@dataclass
class StreamPosition:
    epoch: int = 0
    index: int = 0  # examples this rank has taken in the current epoch

    def as_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


def shard_paths(inputs) -> list[Path]:
    """The tars of shard inputs (folders, tars, list files: dftrain.shards.inputs), in order."""
    from dftrain.shards import ShardError
    from dftrain.shards.inputs import shard_set

    try:  # never the *.tar of a folder without a manifest: that is an interrupted build's partial data
        chosen = shard_set(inputs)
    except ShardError as exc:
        raise ConfigError(str(exc)) from None
    if not chosen.members:
        raise ConfigError(f"no shards in {chosen.describe()}")
    return chosen.paths


def decode_image(jpg: bytes, resolution: int) -> torch.Tensor:
    """JPEG bytes -> float tensor [3, R, R] in [-1, 1] (shorter side resized to R, centre crop)."""
    return pixels_from_crop(crop_image(jpg, resolution))


def pixels_from_crop(array) -> torch.Tensor:
    """uint8 [R, R, 3] -> float [3, R, R] in [-1, 1].

    Transposed while still uint8, then converted in place: the same values as converting first, in a
    third of the time (one strided copy of bytes instead of floats, no temporaries).
    """
    import numpy as np

    return torch.from_numpy(np.asarray(array, dtype=np.uint8)).permute(2, 0, 1).contiguous().float().div_(127.5).sub_(1.0)


def load_latents_field(raw: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(raw)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value if isinstance(value, str) else ""


def pick_caption(sample: dict, caption_field: str) -> str:
    """`txt` (the training caption) or the original caption kept in json."""
    meta = sample.get("json") or {}
    if caption_field == "orig":
        for key in ("orig_caption", "caption"):
            if isinstance(meta.get(key), str) and meta[key].strip():
                return meta[key]
    return _text(sample.get("txt", ""))


def all_captions(sample: dict, caption_field: str) -> list[str]:
    meta = sample.get("json") or {}
    captions = [c for c in meta.get("captions") or [] if isinstance(c, str) and c.strip()]
    return captions or [pick_caption(sample, caption_field)]


class TrainStream:
    """Endless, deterministic stream of this rank's training examples (epoch after epoch)."""

    def __init__(
        self,
        folder,
        *,
        rank: int,
        world_size: int,
        resolution: int,
        precomputed: bool,
        caption_field: str = "txt",
        shuffle_buffer: int = 256,
        seed: int = 0,
        position: StreamPosition | None = None,
        num_workers: int = 0,
        prefetch: int = 4,
        dup_sampling: str = "none",
        dup_fraction: float = 0.05,
        dup_weight: int = 5,
    ):
        from dftrain.shards import SkipStats

        self.paths = shard_paths(folder)
        self.rank, self.world_size = rank, world_size
        self.resolution, self.precomputed = resolution, precomputed
        self.caption_field, self.shuffle_buffer, self.seed = caption_field, shuffle_buffer, seed
        self.position = position or StreamPosition()
        self.stats = SkipStats()
        # Fewer shards than ranks: split by example instead of by shard so that no rank is idle.
        self.split_by_shard = len(self.paths) >= world_size
        # Decoding in `num_workers` processes (dftrain/train/input_pipeline.py), images_ahead() images
        # ahead; results are taken in stream order, so batches, skips and the resume position are those
        # of 0 workers (the position counts the examples taken, not those decoded ahead).
        self.num_workers = 0 if precomputed else num_workers
        self.prefetch = max(1, prefetch)
        self._pool = None
        self._batch_size = 0  # the last next_batch size: how far ahead to decode
        self.dup_sampling, self.dup_fraction, self.dup_weight = dup_sampling, dup_fraction, dup_weight
        self._iter = self._examples()

    def _raw_epoch(self, epoch: int) -> Iterator[dict]:
        from dftrain.shards import iter_samples

        require = (LATENTS_FIELD,) if self.precomputed else ("jpg", "txt")
        kwargs = dict(
            shuffle_buffer=self.shuffle_buffer, seed=self.seed * 100003 + epoch, decode=False,
            require=require, stats=self.stats,
        )
        if self.split_by_shard:
            yield from iter_samples(self.paths, rank=self.rank, world_size=self.world_size, **kwargs)
        else:
            for i, sample in enumerate(iter_samples(self.paths, rank=0, world_size=1, **kwargs)):
                if i % self.world_size == self.rank:
                    yield sample

    def _fresh(self, epoch: int, skip: int, counts: dict) -> Iterator[tuple[int, dict]]:
        for i, raw in enumerate(self._weighted(self._raw_epoch(epoch), epoch)):
            counts["produced"] += 1
            if i >= skip:
                yield i, raw

    def _weighted(self, raws: Iterator[dict], epoch: int) -> Iterator[dict]:
        """The prior study's duplication sampling (dftrain/train/duplication.py), or the stream as it is."""
        if self.dup_sampling == "none":
            yield from raws
            return
        from dftrain.train import duplication

        rng = random.Random((self.seed * 1000003 + epoch) * 1009 + self.rank)
        chosen = lambda raw: duplication.is_chosen(str(raw.get("__key__")), self.dup_fraction, self.seed)  # noqa: E731
        window = max(self.shuffle_buffer, 16)
        for raw, picked in duplication.spread_copies(raws, chosen, self.dup_weight, window, rng):
            if picked and self.dup_sampling == "dup_image":
                captions = all_captions(raw, self.caption_field)
                raw = {**raw, "__caption__": duplication.random_caption(captions, rng)}
            yield raw

    def _converted(self, items: Iterator[tuple[int, dict]]) -> Iterator[tuple[int, dict | None]]:
        """(index, example or None for a skipped sample), in stream order."""
        if not self.num_workers:
            for i, raw in items:
                yield i, self.convert(raw)
            return
        from collections import deque
        from concurrent.futures.process import BrokenProcessPool

        from dftrain.train.input_pipeline import DECODE_CHUNK, decode_crops, start_pool

        if self._pool is None:
            self._pool = start_pool(self.num_workers)
            log.info("rank %d: decoding images in %d worker processes", self.rank, self.num_workers)
        window: deque = deque()  # (the (index, raw) pairs of one task, its future), in stream order
        pending: list[tuple[int, dict]] = []
        in_flight = 0  # images in the window

        def submit() -> None:
            nonlocal in_flight
            window.append((list(pending), self._pool.submit(decode_crops, [raw["jpg"] for _, raw in pending],
                                                           self.resolution)))
            in_flight += len(pending)
            pending.clear()

        try:
            for item in items:
                pending.append(item)
                if len(pending) == DECODE_CHUNK:
                    submit()
                # take the oldest task once the others still keep images_ahead() images decoding
                while window and in_flight - len(window[0][0]) >= self.images_ahead():
                    task = window.popleft()
                    in_flight -= len(task[0])
                    yield from self._decoded(*task)
            if pending:
                submit()
            while window:
                yield from self._decoded(*window.popleft())
        except BrokenProcessPool as exc:
            raise DftrainError(f"rank {self.rank}: an image-decoding worker process died ({exc}); continue with "
                               "--resume auto, with fewer --num-workers if memory ran out") from None

    def _decoded(self, pairs: list[tuple[int, dict]], done) -> Iterator[tuple[int, dict | None]]:
        """A worker's results as examples; a dead worker is an error, not bad images to count and skip."""
        from concurrent.futures.process import BrokenProcessPool
        from functools import partial

        from dftrain.train.input_pipeline import returned_or_raised

        if isinstance(done.exception(), BrokenProcessPool):
            raise done.exception()
        for (index, raw), crop in zip(pairs, done.result(), strict=True):
            yield index, self.convert(raw, crop=partial(returned_or_raised, crop))

    def images_ahead(self) -> int:
        """Images in the workers' hands while the step runs: `prefetch` per worker, and at least the next
        two batches, so that a large batch is not left to decode after the step, in the step's time."""
        return max(self.num_workers * self.prefetch, 2 * self._batch_size)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _examples(self) -> Iterator[dict]:
        skip = self.position.index
        while True:
            counts = {"produced": 0}
            tried = used = 0
            for i, example in self._converted(self._fresh(self.position.epoch, skip, counts)):
                self.position.index = i + 1
                tried += 1
                if example is not None:
                    used += 1
                    yield example
            produced = counts["produced"]
            if produced == 0:
                raise DftrainError(f"rank {self.rank}: no usable training samples in {self.paths[0].parent}")
            if tried and not used:  # every sample skipped: another epoch would skip them all again, forever
                raise DftrainError(f"rank {self.rank}: none of its {tried} training samples in "
                                   f"{self.paths[0].parent} could be used ({self.stats.summary()})")
            self.position = StreamPosition(self.position.epoch + 1, 0)
            skip = 0

    def convert(self, raw: dict, crop=None) -> dict | None:
        """A training example from a raw sample (None: skipped and counted). crop: a callable giving the
        decoded uint8 crop (a worker's result); default: decode here."""
        example = {
            "key": raw.get("__key__"),
            "caption": raw.get("__caption__") or pick_caption(raw, self.caption_field),
            "captions": all_captions(raw, self.caption_field),
        }
        if self.precomputed:
            tensors = load_latents_field(raw[LATENTS_FIELD])
            example["latent"] = tensors["latent"]
            example["latent_flip"] = tensors.get("latent_flip")
            example["latent_std"] = tensors.get("latent_std")
            example["latent_flip_std"] = tensors.get("latent_flip_std")
            example["text_states"] = tensors.get("text_states")
        else:
            try:
                array = crop() if crop is not None else crop_image(raw["jpg"], self.resolution)
                example["pixels"] = pixels_from_crop(array)
            except Exception as exc:  # PIL raises many types for a bad image
                log.warning("skipped sample %s: undecodable image (%s)", example["key"], exc)
                self.stats.add(str(example["key"]), "undecodable image")
                return None
        return example

    def next_batch(self, n: int) -> list[dict]:
        self._batch_size = n
        return [next(self._iter) for _ in range(n)]


def class_synonyms_of(sample: dict) -> list[str]:
    """The class's names, its name first: json `class_synonyms` (what `dftrain shard objects` writes from
    Tiny-ImageNet's words.txt), else `class_name` split at commas (words.txt's own form), else `cls`."""
    from dftrain.shards.build import split_synonyms

    meta = sample.get("json") or {}
    listed = meta.get("class_synonyms")
    names = [n for n in listed if isinstance(n, str)] if isinstance(listed, list) else []
    name = meta.get("class_name")
    if isinstance(name, str) and name.strip():
        names = split_synonyms(name) + names
    elif "cls" in sample and not names:
        names = [str(sample["cls"])]
    names = [n.strip().replace("_", " ") for n in names if n.strip()]
    if not names:
        raise DftrainError(f"object sample {sample.get('__key__')} has no class_name in json and no cls")
    return list(dict.fromkeys(names))


def class_name_of(sample: dict) -> str:
    """The class's name (its first synonym): what identifies the class."""
    return class_synonyms_of(sample)[0]


def stored_view(store: dict[str, torch.Tensor], name: str, indices: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Rows `indices` of `store[name]` ("latent" or "latent_std"), as fp32; where `flips`, the mirror
    image's rows ("latent_flip", "latent_flip_std") when stored, else the rows flipped."""
    rows = store[name][indices].float()
    if not bool(flips.any()):
        return rows
    mirror_name = name.replace("latent", "latent_flip", 1)
    mirror = store[mirror_name][indices].float() if mirror_name in store else rows.flip(-1)
    return torch.where(flips.view(-1, *([1] * (rows.dim() - 1))), mirror, rows)


def _spill_file(folder: Path, shape: tuple[int, ...]):
    """A writable fp16 array of `shape` backed by a file in `folder`, removed from the folder at once."""
    import os
    import tempfile

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="object-latents-", suffix=".f16", dir=folder)
    try:
        os.close(handle)
        return np.memmap(name, dtype=np.float16, mode="w+", shape=shape)
    finally:
        os.unlink(name)


def object_views(flip: bool, posterior: bool) -> tuple[str, ...]:
    """The latent fields an object bank keeps: the mean, the posterior std when latents are sampled,
    and the mirror image's when objects are flipped (precompute's names)."""
    views = ["latent"] + (["latent_std"] if posterior else [])
    return tuple(views + ([v.replace("latent", "latent_flip", 1) for v in views] if flip else []))


class ObjectBank:
    """All object-bank examples in memory: JPEG bytes (images) or latents, and class names with their
    synonyms (`labels`: every class's names, one list; class c's are labels[label_start[c]:][:label_count[c]])."""

    def __init__(self, folder: str | Path, *, precomputed: bool, resolution: int):
        from dftrain.shards import SkipStats, iter_samples

        self.precomputed, self.resolution = precomputed, resolution
        self.stats = SkipStats()
        require = (LATENTS_FIELD,) if precomputed else ("jpg",)
        items, names, synonyms = [], [], {}
        # Images are decoded once here (and dropped), so an undecodable one is a counted skip with its key
        # now rather than a traceback at the first draw.
        for sample in iter_samples(shard_paths(folder), rank=0, world_size=1, decode=not precomputed, require=require,
                                   stats=self.stats):
            own = class_synonyms_of(sample)
            names.append(own[0])
            synonyms[own[0]] = list(dict.fromkeys(synonyms.get(own[0], []) + own))  # union, in order
            items.append(load_latents_field(sample[LATENTS_FIELD]) if precomputed else sample["jpg"])
        if not items:
            raise ConfigError(f"object bank {folder} holds no usable samples")
        self.class_names = sorted(set(names))
        index = {name: i for i, name in enumerate(self.class_names)}
        self.class_ids = torch.tensor([index[n] for n in names])
        self.labels = [label for name in self.class_names for label in synonyms[name]]
        self.label_count = torch.tensor([len(synonyms[name]) for name in self.class_names])
        self.label_start = torch.cumsum(self.label_count, 0) - self.label_count
        self.latents: dict[str, torch.Tensor] | None = None
        if precomputed:  # the fields every sample holds (latent; std and mirrors from newer precomputes)
            fields = [f for f in items[0] if f.startswith("latent") and all(f in t for t in items)]
            self.latents = {f: torch.stack([t[f] for t in items]) for f in fields}
        self.jpgs = None if precomputed else items
        log.info("object bank: %d examples of %d classes (%d labels with their synonyms) from %s", len(items),
                 len(self.class_names), len(self.labels), folder)

    def __len__(self) -> int:
        return len(self.class_ids)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n random object indices (uniform over the bank)."""
        return torch.randint(0, len(self), (n,), generator=generator)

    def draw_labels(self, object_idx: torch.Tensor, generator: torch.Generator, mode: str) -> torch.Tensor:
        """Indices into `labels` for the drawn objects: a random synonym of each one's class (`synonym`,
        the paper's), or the class's name (`first`: draws nothing)."""
        from dftrain.train.object_draws import synonym_choices

        classes = self.class_ids[object_idx]
        if mode == "first":
            return self.label_start[classes]
        uniforms = torch.rand(len(object_idx), generator=generator)
        return self.label_start[classes] + synonym_choices(self.label_count[classes], uniforms)

    def cache_latents(self, encode, *, max_bytes: int, latent_shape: tuple[int, ...], views: tuple[str, ...] = ("latent",),
                      batch_size: int = 32, spill_dir: Path | None = None) -> bool:
        """Encode every object image once (fixed batches: deterministic) and keep `views` (fp16): the posterior
        mean, its std, and the same for the mirror image (see object_views). `encode(pixels)` -> (mean, std).

        The frozen VAE makes these constants, so this only saves time. Latents larger than `max_bytes`
        go to a memory-mapped file in `spill_dir` (unlinked at once: the mapping keeps it until the
        process ends), so at SD resolutions a large bank is still encoded once, not at every draw;
        without `spill_dir` they are encoded per draw (returns False).
        """
        if self.latents is not None:
            return True
        shape = (len(views), len(self), *latent_shape)
        nbytes = 2 * int(torch.Size(shape).numel())
        if nbytes > max_bytes and spill_dir is None:
            log.info("object bank latents would take %.1f MiB > cap: encoding objects per draw", nbytes / 2**20)
            return False
        store = _spill_file(Path(spill_dir), shape) if nbytes > max_bytes else None
        chunks: dict[str, list[torch.Tensor]] = {v: [] for v in views}
        mirrors = any(v.startswith("latent_flip") for v in views)
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            pixels = self.pixels(torch.arange(start, stop))
            encoded = dict(zip(("latent", "latent_std"), encode(pixels), strict=True))
            if mirrors:
                encoded.update(zip(("latent_flip", "latent_flip_std"), encode(pixels.flip(-1)), strict=True))
            for v, name in enumerate(views):
                if store is None:
                    chunks[name].append(encoded[name].half())
                else:
                    store[v, start:stop] = encoded[name].half().numpy()
        if store is None:
            self.latents = {name: torch.cat(parts) for name, parts in chunks.items()}
        else:
            mapped = torch.from_numpy(store)
            self.latents = {name: mapped[v] for v, name in enumerate(views)}
        where = "in memory" if store is None else f"memory-mapped from {spill_dir}"
        log.info("object bank: %d latents cached %s (%s; %.1f MiB)", len(self), where, ", ".join(views), nbytes / 2**20)
        return True

    def pixels(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.stack([decode_image(self.jpgs[int(i)], self.resolution) for i in indices])

    def cached_latents(self, indices: torch.Tensor, flips: torch.Tensor | None = None, name: str = "latent") -> torch.Tensor:
        """The cached `name` view ("latent" or "latent_std") of objects `indices`, mirrored where `flips`."""
        flips = torch.zeros(len(indices), dtype=torch.bool) if flips is None else flips
        return stored_view(self.latents, name, indices, flips)
