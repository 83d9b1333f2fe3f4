"""`llmst pairs sample`: every method, the leak guard (on real STS-b pairs), bad rows, signatures, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_lines, write_jsonl

from llmst.errors import ConfigError
from llmst.pairs.config import SampleConfig, sample_signature
from llmst.pairs.sample import pair_key, sample_pairs
from llmst.stage import read_marker

STSB = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stsb"


def stsb_pairs(split: str, limit: int) -> list[dict]:
    rows = []
    for line in open(STSB / f"sts-{split}.csv", encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        rows.append({"text_a": parts[5], "text_b": parts[6], "score": float(parts[4])})
        if len(rows) == limit:
            break
    return rows


POOL = [
    {"text_a": "A man is playing a guitar.", "text_b": "A man plays the guitar."},
    {"text_a": "A woman is slicing an onion.", "text_b": "A woman cuts an onion into slices."},
    {"text_a": "A dog runs across the park.", "text_b": "A cat sleeps on the sofa."},
    {"text_a": "A man is playing the piano.", "text_b": "Someone plays a keyboard."},
    {"text_a": "Two dogs run in a park.", "text_b": "The stock market fell sharply today."},
]


def _keys(path: Path) -> set[tuple[str, str]]:
    return {pair_key(r["text_a"], r["text_b"]) for r in read_lines(path)}


def test_the_leak_guard_drops_every_test_pair_in_either_order(tmp_path):
    # unlabeled pairs that include 60 STS-b test pairs; bm25 finds each test pair's sentences as neighbours
    test = stsb_pairs("test", 60)
    source = write_jsonl(tmp_path / "pairs.jsonl", stsb_pairs("train", 300) + test)
    exclude = write_jsonl(  # the evaluation file: swapped sides and re-spaced, re-cased text
        tmp_path / "test.jsonl",
        [{"text_a": "  " + r["text_b"].upper(), "text_b": r["text_a"].replace(" ", "  ")} for r in test],
    )
    test_keys = {pair_key(r["text_a"], r["text_b"]) for r in test}
    for method in ("bm25", "random"):
        options = {"method": method, "top_k": 5, "new_only": False, "progress": False}
        open_run = sample_pairs(source, tmp_path / f"{method}-open.jsonl", SampleConfig(**options))
        leaked = _keys(tmp_path / f"{method}-open.jsonl") & test_keys
        if method == "bm25":
            assert len(leaked) > 20, "the check needs test pairs that sampling would offer"
        guarded = sample_pairs(
            source, tmp_path / f"{method}.jsonl", SampleConfig(**options, exclude=[str(exclude)])
        )
        assert not _keys(tmp_path / f"{method}.jsonl") & test_keys
        assert guarded["dropped"].get("excluded_pair", 0) >= len(leaked)
        assert guarded["written"] + sum(guarded["dropped"].values()) == guarded["candidates"]
        assert open_run["candidates"] == guarded["candidates"]
    # the stricter guard: no sampled pair holds any sentence of the evaluation file
    strict = SampleConfig(
        top_k=5, new_only=False, progress=False, exclude=[str(exclude)], exclude_sentences=True
    )
    report = sample_pairs(source, tmp_path / "strict.jsonl", strict)
    test_sentences = {key for pair in test_keys for key in pair}
    assert report["dropped"]["excluded_sentence"] > 0
    assert not {t for pair in _keys(tmp_path / "strict.jsonl") for t in pair} & test_sentences


def test_bm25_finds_lexical_neighbours_and_drops_input_pairs(tmp_path):
    source = write_jsonl(tmp_path / "pool.jsonl", POOL)
    report = sample_pairs(source, tmp_path / "out.jsonl", SampleConfig(top_k=1, progress=False))
    rows = read_lines(tmp_path / "out.jsonl")
    partner = {r["text_a"]: r["text_b"] for r in rows}
    # the guitar sentence's best lexical neighbour is its own input pair (dropped as such), so it has none;
    # the piano sentence (playing, man) finds a guitar sentence
    assert pair_key(POOL[0]["text_a"], POOL[0]["text_b"]) not in _keys(tmp_path / "out.jsonl")
    assert report["dropped"]["already_in_input"] >= 1
    assert "guitar" in partner["A man is playing the piano."]
    assert all(r["sampler"] == "bm25" and r["sampler_rank"] == 1 and r["sampler_score"] > 0 for r in rows)
    assert len({r["id"] for r in rows}) == len(rows) == len(_keys(tmp_path / "out.jsonl"))  # no (b, a) twin
    assert report["sentences"] == [5, 5] and report["queries"] == 10


def test_random_is_seeded_and_never_pairs_a_sentence_with_itself(tmp_path):
    source = write_jsonl(tmp_path / "pool.jsonl", [{"text": f"sentence number {i}"} for i in range(30)])
    runs = []
    for seed in (0, 0, 1):
        out = tmp_path / f"r{len(runs)}.jsonl"
        sample_pairs(
            source, out, SampleConfig(method="random", text_fields="text", top_k=2, seed=seed, progress=False)
        )
        runs.append([(r["text_a"], r["text_b"]) for r in read_lines(out)])
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert all(a != b for a, b in runs[0])
    assert 30 <= len(runs[0]) <= 60  # 2 partners per sentence, less the (b, a) twins


def test_semantic_and_recombine_with_the_bundled_encoder(tmp_path):
    paraphrases = [
        ("A man is playing a guitar.", "A man plays the guitar."),
        ("A woman is slicing an onion.", "A woman cuts an onion."),
        ("The stock market fell sharply today.", "Shares dropped steeply on Wall Street."),
    ]
    sentences = write_jsonl(tmp_path / "sentences.jsonl", [{"text": t} for pair in paraphrases for t in pair])
    config = SampleConfig(method="semantic", text_fields="text", top_k=1, progress=False)
    sample_pairs(sentences, tmp_path / "sem.jsonl", config)
    # each sentence's nearest neighbour is its paraphrase, also where no word is shared (bm25 cannot)
    assert _keys(tmp_path / "sem.jsonl") == {pair_key(*pair) for pair in paraphrases}
    source = write_jsonl(tmp_path / "pool.jsonl", POOL)
    # recombine: side-a queries against side-b sentences only, the input's own pairs dropped
    report = sample_pairs(
        source, tmp_path / "re.jsonl", SampleConfig(method="recombine", top_k=2, progress=False)
    )
    rows = read_lines(tmp_path / "re.jsonl")
    side_a, side_b = {r["text_a"] for r in POOL}, {r["text_b"] for r in POOL}
    assert rows and all(r["text_a"] in side_a and r["text_b"] in side_b for r in rows)
    # the four related gold pairs are each other's top-2 (dropped as input pairs); the unrelated one is not
    assert report["method"] == "recombine-semantic" and report["dropped"]["already_in_input"] >= 3
    assert not _keys(tmp_path / "re.jsonl") & {pair_key(r["text_a"], r["text_b"]) for r in POOL}
    assert all(r["sampler_score"] <= 1.0 for r in rows)


def test_bad_rows_go_to_the_rejects_file_and_bad_exclusions_are_an_error(tmp_path):
    rows = [*POOL, {"text_a": "only one side"}, {"text_a": "a number", "text_b": ["not", "text"]}]
    source = write_jsonl(tmp_path / "pool.jsonl", rows)
    (tmp_path / "pool.jsonl").write_text((tmp_path / "pool.jsonl").read_text() + "{not json\n")
    report = sample_pairs(source, tmp_path / "out.jsonl", SampleConfig(progress=False))
    rejects = read_lines(tmp_path / "out.jsonl.rejects.jsonl")
    assert report["rejected"] == 3 and [r["line"] for r in rejects] == [6, 7, 8]
    assert "no text" in rejects[0]["reason"] and "malformed JSON" in rejects[2]["reason"]
    assert json.loads((tmp_path / "out.jsonl.report.json").read_text()) == report
    write_jsonl(tmp_path / "bad-exclude.jsonl", [{"text_a": "x", "text_b": "y"}, {"text_a": "no pair"}])
    with pytest.raises(ConfigError, match="line 2: no pair"):
        sample_pairs(
            source,
            tmp_path / "o2.jsonl",
            SampleConfig(progress=False, exclude=str(tmp_path / "bad-exclude.jsonl")),
        )
    assert not (tmp_path / "o2.jsonl").exists()  # nothing half-written


def test_signature_follows_what_changes_the_pairs(tmp_path):
    source = write_jsonl(tmp_path / "pool.jsonl", POOL)
    sample_pairs(source, tmp_path / "out.jsonl", SampleConfig(progress=False))
    base = SampleConfig()
    assert read_marker(tmp_path / "out.jsonl") == sample_signature(source, base)
    assert sample_signature(source, SampleConfig(batch_size=8, seed=5, encoder="x")) == sample_signature(
        source, base
    )
    assert sample_signature(source, SampleConfig(top_k=4)) != sample_signature(source, base)
    assert sample_signature(source, SampleConfig(method="random", seed=5)) != sample_signature(
        source, SampleConfig(method="random")
    )
    exclude = write_jsonl(tmp_path / "ex.jsonl", POOL[:1])
    assert sample_signature(source, SampleConfig(exclude=str(exclude))) != sample_signature(source, base)


def test_cli_errors_are_one_line(tmp_path):
    source = write_jsonl(tmp_path / "pool.jsonl", POOL)
    for args, message in (
        (["--method", "recombine", "--text-field", "text_a"], "needs two sides"),
        (["--method", "mmr"], "mmr"),
        (["--exclude", str(tmp_path / "missing.jsonl")], "--exclude file not found"),
        (["--top-k", "0"], "--top-k must be >= 1"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "llmst",
                "pairs",
                "sample",
                str(source),
                "-o",
                str(tmp_path / "o.jsonl"),
                *args,
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr
