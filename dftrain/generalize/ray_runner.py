"""`--engine ray`: the generalize pass of `--dedup global` on Ray Data.

The parts this run has to generalize become a Ray dataset of part numbers; `map_batches` sends them, one
at a time, to a pool of actors (`PartWorker`), each holding one model (and its own spaCy, WordNet and
scorer) for its whole life. Ray hands the next part to whichever worker is free, so slow parts do not hold
the others up. Each worker does exactly the per-part work of the plain runner (passes.generalize_one_part):
merge the part from the runs, ask the new captions, score, write the part file and its receipt, so the
output is the same and a killed run resumes the same way. The collect and write passes stay in the driver.

Ray's own LLM processor (ray.data.llm) runs one prompt per row through vLLM; the fallback chain asks,
validates, retries and checks faithfulness between calls, so the per-part class is used instead.

    dftrain generalize --shards IN --out OUT --engine ray --ray-workers 8 --backend vllm --model M
    (on a Ray cluster: `ray start` on every node first; RAY_ADDRESS=auto lets the driver join it)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dftrain.errors import ConfigError, MissingDependencyError

log = logging.getLogger("dftrain.generalize")


def check_ray(*, dedup: str, world_size: int, backend_instance=None) -> None:
    """Before anything loads: Ray installed, global dedup, one driver."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise MissingDependencyError("--engine ray needs Ray Data: pip install 'dftrain[ray]' (or 'ray[data]')")
    if dedup != "global":
        raise ConfigError("--engine ray runs the parts of the caption table: use it with --dedup global")
    if world_size != 1:
        raise ConfigError(f"--engine ray: start one driver (Ray spreads the work), not {world_size} ranks")
    if backend_instance is not None:
        raise ConfigError("--engine ray builds the backend in each worker: pass a backend name, not an instance")


class PartWorker:
    """One Ray actor: builds the stage (the model loads on the first part with captions to ask) and
    generalizes the parts it is given."""

    def __init__(self, out_dir: str, runs: dict, digest: str, model_id: str, settings: dict, options: dict):
        from dftrain.generalize.stage import prepare_stage

        self.out_dir, self.runs, self.digest = Path(out_dir), runs, digest
        self.model_id, self.settings = model_id, settings
        self.prepared = prepare_stage(**options)
        if self.prepared.model_id != model_id:
            raise ConfigError(f"this Ray worker sees another model ({self.prepared.model_id}) than the driver "
                              f"({model_id}); give every node the same model files")
        self._generalizer = None

    def _gen(self):
        if self._generalizer is None:
            self._generalizer = self.prepared.make_generalizer()
        return self._generalizer

    def __call__(self, batch: dict) -> dict:
        from dftrain.generalize.passes import generalize_one_part
        from dftrain.generalize.records import score_records

        def llm() -> dict:
            backend = self._gen().backend
            return {"backend": backend.name, "model": backend.model_id,
                    "prompt_hash": self.settings["prompt_hash"]}

        rows = [generalize_one_part(
            self.out_dir, int(part), self.runs, self.digest, model_id=self.model_id, settings=self.settings,
            generalize=lambda texts, on_batch: self._gen().generalize(texts),
            score=lambda texts, results: score_records(texts, results, self.prepared.scorer), llm=llm)
            for part in batch["part"]]
        return {key: [row[key] for row in rows] for key in ("part", "unique_captions", "samples", "asked",
                                                             "written")}


def generalize_pass_ray(out_dir: Path, shards: list, parts_todo: list[int], *, parts: int, limits: dict | None,
                        model_id: str, settings: dict, options: dict, workers: int | None) -> dict:
    """Pass 2 on Ray Data; returns the same counts as passes.generalize_pass."""
    import ray

    from dftrain.generalize.passes import all_runs, part_name, runs_digest
    from dftrain.generalize.table import parts_dir

    runs = all_runs(out_dir, shards, parts=parts, limits=limits)
    parts_dir(out_dir).mkdir(parents=True, exist_ok=True)
    digest = runs_digest(runs)
    workers = workers or 2
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")  # a cluster to join; else Ray starts a local instance
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 **({} if address else {"num_cpus": max(workers, os.cpu_count() or 1)}))
    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = ray.data.from_items([{"part": p} for p in parts_todo], override_num_blocks=max(1, len(parts_todo)))
    rows = dataset.map_batches(
        PartWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
        fn_constructor_kwargs={"out_dir": str(out_dir), "runs": runs, "digest": digest, "model_id": model_id,
                               "settings": settings, "options": options}).take_all()
    report = {"written": sorted(part_name(r["part"]) for r in rows if r["written"]),
              "skipped_done": sorted(part_name(r["part"]) for r in rows if not r["written"]),
              "asked": sum(r["asked"] for r in rows), "unique_captions": sum(r["unique_captions"] for r in rows),
              "samples": sum(r["samples"] for r in rows), "engine": "ray", "workers": workers}
    log.info("generalize on Ray (%d workers): %d part(s) written (%d captions asked), %d already there", workers,
             len(report["written"]), report["asked"], len(report["skipped_done"]))
    return report
