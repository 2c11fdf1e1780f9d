"""`dftrain score` end to end: --text, --file, --shards, --workers."""

import json

import pytest
from score_helpers import score_cache_dir  # noqa: F401 (fixture)
from typer.testing import CliRunner

from dftrain.cli import app
from dftrain.errors import ConfigError
from dftrain.score import SCORE_KEYS, load_scorer

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def cache_root(score_cache_dir):  # noqa: F811 (fixture from score_helpers)
    root = score_cache_dir
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFTRAIN_CACHE", str(root))
        mp.delenv("NLTK_DATA", raising=False)
        load_scorer()  # builds the WordNet root and statistics once for this module
        yield root


def test_text_prints_one_object():
    result = runner.invoke(app, ["score", "--text", "a dog on a beach"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["caption"] == "a dog on a beach" and set(SCORE_KEYS) <= set(row)


def test_tokens_option_picks_the_token_rule():
    caption = "The children have been playing in the park, happily!"
    rows = {}
    for rule in ("paper", "dftrain"):
        result = runner.invoke(app, ["score", "--text", caption, "--tokens", rule])
        assert result.exit_code == 0, result.output
        rows[rule] = json.loads(result.stdout.strip().splitlines()[-1])
    assert rows["paper"] == load_scorer().score(caption)  # paper is the default
    assert rows["dftrain"] == load_scorer(tokens="dftrain").score(caption)
    assert rows["paper"]["tense_modality"] == 10.0 and rows["dftrain"]["tense_modality"] < 10.0
    bad = runner.invoke(app, ["score", "--text", caption, "--tokens", "nltk"])
    assert bad.exit_code != 0


def test_file_to_jsonl_keeps_order_and_lines(tmp_path):
    captions = ["a dog on a beach", "Nike Air Max 270, size 42", "", "a dog on a beach", "Ein Hund"]
    src = tmp_path / "captions.txt"
    src.write_text("\n".join(captions) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "scores.jsonl"
    result = runner.invoke(
        app, ["score", "--file", str(src), "--out", str(out), "--histogram", str(tmp_path / "h.png")]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["caption"] for r in rows] == captions
    assert list(rows[0]) == ["caption", *SCORE_KEYS]
    assert rows[0] == rows[3]
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert "generality" in result.stderr and "median" in result.stderr


def test_non_utf8_line_is_kept_not_dropped(tmp_path):
    src = tmp_path / "captions.txt"
    src.write_bytes(b"a cat\n\xff\xfe broken\na dog\n")
    result = runner.invoke(app, ["score", "--file", str(src)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 3 and rows[1]["caption"].endswith("broken")


def test_exactly_one_input_required():
    result = runner.invoke(app, ["score", "--text", "x", "--file", "y"])
    assert isinstance(result.exception, ConfigError)
    result = runner.invoke(app, ["score"])
    assert isinstance(result.exception, ConfigError)


def test_shards_mode_scores_txt_and_original(tmp_path):
    from dftrain.shards import ShardWriter

    shard_dir = tmp_path / "shards"
    with ShardWriter(shard_dir, samples_per_shard=2, kind="generalized") as writer:
        for i, (orig, general) in enumerate(
            [("Nike Air Max 270 React, 2019", "a shoe"), ("Barack Obama in Paris, 2009", "a man in a city"),
             ("IKEA KALLAX shelf 77x147 cm", "a shelf")]
        ):  # fmt: skip
            writer.write(
                {"__key__": f"{i:06d}", "txt": general, "json": {"key": f"{i:06d}", "orig_caption": orig}}
            )
    result = runner.invoke(app, ["score", "--shards", str(shard_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (shard_dir / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert [r["field"] for r in rows] == ["txt", "orig_caption"] * 3
    assert {r["key"] for r in rows} == {"000000", "000001", "000002"}
    by = {(r["key"], r["field"]): r["generality"] for r in rows}
    assert all(by[(k, "txt")] > by[(k, "orig_caption")] for k in ("000000", "000001", "000002"))
    assert (shard_dir / "scores_generality.png").read_bytes()[:4] == b"\x89PNG"
    assert "median" in result.stdout and "orig_caption" in result.stdout


def test_shards_mode_without_manifest_is_a_clear_error(tmp_path):
    from dftrain.errors import DftrainError

    result = runner.invoke(app, ["score", "--shards", str(tmp_path)])
    assert isinstance(result.exception, DftrainError)


@pytest.mark.multiproc
def test_workers_give_the_same_scores(tmp_path):
    from dftrain.score.parallel import score_parallel

    captions = [f"a dog number {i % 7} on a beach" for i in range(60)] + ["Nike Air Max 270"] * 5
    single = score_parallel(captions, workers=1)
    multi = score_parallel(captions, workers=2, chunk_size=3)
    assert multi == single and len(multi) == len(captions)


def test_llm_method_goes_through_the_backend(tmp_path, monkeypatch):
    from score_helpers import FakeBackend

    from dftrain.score import llm_judge

    answer = json.dumps(dict.fromkeys(llm_judge.CRITERIA, 6))
    backend = FakeBackend([lambda conversations: [answer] * len(conversations)])
    requested = []
    monkeypatch.setattr(
        llm_judge, "load_judge_backend", lambda name, model=None: requested.append(name) or backend
    )
    src = tmp_path / "captions.txt"
    src.write_text("a dog\nNike Air Max 270\n", encoding="utf-8")
    result = runner.invoke(app, ["score", "--file", str(src), "--method", "llm", "--backend", "transformers"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert requested == ["transformers"] and [r["generality"] for r in rows] == [6.0, 6.0]
