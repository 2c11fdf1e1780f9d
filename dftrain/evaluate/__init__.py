"""Generation and replication evaluation.

generate.py     images from a pipeline folder, prompted with the ORIGINAL training captions
descriptors.py  copy-detection descriptors (embedded, sscd, dino, clip) behind one interface
cache.py        descriptor cache of the generations (safetensors + json, keyed by image hashes)
store.py        training descriptors per shard on disk (float16 .npy, memory-mapped), keyed by content
retrieval.py    FAISS nearest-neighbour search in bounded memory (exact and IVF)
metrics.py      pure numpy metrics (similarity summaries, diversity, Frechet distance)
fid.py          FID over a local Inception TorchScript file
inputs.py       reading a generations folder and a training shard set
run.py          `dftrain evaluate`: wires the pieces, writes matches/report
report.py       report.json, report.md and the two figures
compare.py      `dftrain compare`: runs side by side against a baseline
augment.py      seeded image augmentations and random scenes (planted-copy checks)
calibrate.py    measuring a descriptor on planted copies vs unrelated pairs
"""
