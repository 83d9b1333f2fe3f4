"""The pair experiments on tiny random-init BERTs: `llmst augsbert` and `llmst transencoder` end to end, reruns
that recompute nothing or only what changed, config errors, the leak guard, and the bi-encoder teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import read_lines, write_jsonl

from llmst.errors import ConfigError
from llmst.pairs.config import ScoreConfig, parse_teacher, teacher_name
from llmst.pairs.score import score_pairs
from llmst.pairs.teachers import cosine_to_target


def test_cosine_to_target_clips_to_the_unit_interval():
    assert cosine_to_target(np.array([-0.3, 0.0, 0.42, 1.0])).tolist() == [0.0, 0.0, 0.42, 1.0]


def test_a_bi_encoder_teacher_scores_the_clipped_cosine_of_its_embeddings(tmp_path, tiny_bert_dir):
    from sentence_transformers import SentenceTransformer

    pairs = [
        {"id": "p0", "text_a": "a red car", "text_b": "a red car"},
        {"id": "p1", "text_a": "a red car", "text_b": "the stock market fell sharply"},
        {"id": "p2", "text_a": "two dogs run", "text_b": "dogs are running"},
    ]
    source = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    spec = f"bi-encoder:{tiny_bert_dir}"
    assert parse_teacher(spec) == ("bi-encoder", tiny_bert_dir)
    config = ScoreConfig(teachers=spec, progress=False, cache=False)
    score_pairs(source, tmp_path / "scored.jsonl", config)
    scored = read_lines(tmp_path / "scored.jsonl")
    # by hand: mean-pooled embeddings of each text, cosine, clipped to [0, 1]
    model = SentenceTransformer(tiny_bert_dir)
    a = model.encode([p["text_a"] for p in pairs])
    b = model.encode([p["text_b"] for p in pairs])
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    expected = np.clip(cosine, 0, 1)
    name = teacher_name(spec)
    assert [r["id"] for r in scored] == ["p0", "p1", "p2"]
    assert [r["scores"][name] for r in scored] == pytest.approx(expected.tolist(), abs=1e-5)
    assert [r["score"] for r in scored] == pytest.approx(expected.tolist(), abs=1e-5)
    assert scored[0]["score"] == pytest.approx(1.0, abs=1e-5)
    # a bi-encoder and a cross-encoder teacher of the same folder are different teachers (cache, signature)
    from llmst.pairs.teachers import teacher_identity

    assert teacher_identity(spec, config) != teacher_identity(f"cross-encoder:{tiny_bert_dir}", config)


WORDS = ["red", "blue", "green", "black"]


def _gold(n: int, start: int, field: str = "score") -> list[dict]:
    """Pairs scored 1 when both texts name the same colour, else 0."""
    rng = np.random.default_rng(start)
    rows = []
    for i in range(n):
        a, b = rng.choice(len(WORDS), 2)
        if i % 2 == 0:
            b = a
        rows.append(
            {
                "id": f"g{start + i}",
                "text_a": f"a {WORDS[a]} car number {start + i}",
                "text_b": f"the {WORDS[b]} house {start + 2 * i}",
                field: float(a == b),
            }
        )
    return rows


def _outputs(run) -> dict[str, int]:
    skip = {"report.json", "report.md", "augsbert.png", "transencoder.png", "config.yaml"}
    return {
        str(p.relative_to(run)): p.stat().st_mtime_ns
        for p in run.rglob("*")
        if p.is_file() and p.name not in skip
    }


def _same_except(after: dict[str, int], first: dict[str, int], kept: tuple, changed: tuple) -> None:
    """A rerun kept the outputs `kept` and rewrote the outputs `changed`."""
    for name in kept:
        assert after[name] == first[name], name
    for name in changed:
        assert after[name] != first[name], name


def _tiny(tiny_bert_dir: str, **extra) -> dict:
    return {"student": tiny_bert_dir, "epochs": 1, "batch_size": 8, "max_length": 32, **extra}


def _augsbert_yaml(tmp_path, tiny_bert_dir, **extra) -> str:
    import yaml

    train, test = _gold(12, 0), _gold(8, 200)
    # a dev pair made of two train sentences: every sampler below proposes it unless the guard drops it
    leak = {"text_a": train[0]["text_a"], "text_b": train[1]["text_b"], "score": 0.5}
    # a test pair among the gold train pairs (reversed, re-cased, re-spaced): dropped from training (line 13)
    copy = {"text_a": test[3]["text_b"].upper(), "text_b": "  " + test[3]["text_a"], "score": 1.0}
    write_jsonl(tmp_path / "train.jsonl", [*train, copy])
    write_jsonl(tmp_path / "dev.jsonl", [leak, *_gold(7, 100)])
    write_jsonl(tmp_path / "test.jsonl", test)
    config = {
        "out_dir": "run",
        "data": {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl", "gold_field": "score"},
        "teacher": _tiny(tiny_bert_dir, learning_rate=1e-3),
        "sample": {"methods": ["bm25", "semantic"], "top_k": 23, "encoder": tiny_bert_dir},
        "silver": 16,
        "control": True,
        "score": {"max_length": 32, "cache": False},
        "student": _tiny(tiny_bert_dir, loss="cosent", learning_rate=1e-3),
        "seeds": [0, 1],
        **extra,
    }
    path = tmp_path / "augsbert.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_augsbert_runs_reports_guards_leaks_and_reruns_only_changed_stages(tmp_path, tiny_bert_dir):
    import yaml

    from llmst.experiments.augsbert import load_augsbert_config, run_augsbert
    from llmst.pairs.sample import pair_key

    path = _augsbert_yaml(tmp_path, tiny_bert_dir)
    report = run_augsbert(load_augsbert_config(path))
    run = tmp_path / "run"
    for name in ("report.json", "report.md", "augsbert.png", "config.yaml"):
        assert (run / name).exists(), name
    assert list(report["variants"]) == ["gold", "augsbert", "random"]
    assert set(report["teacher"]) == set(report["start"]) == {"dev", "test"}
    assert report["silver"]["augsbert"]["methods"] == ["bm25", "semantic"]
    # the control is exactly as large as the augsbert set, which takes the methods' pairs in turn up to silver
    assert report["silver"]["augsbert"]["pairs"] == report["silver"]["random"]["pairs"] == 16
    subset = read_lines(run / "silver" / "augsbert.jsonl")
    assert [r["sampler"] for r in subset[:2]] == ["bm25", "semantic"]
    assert len(subset) == len(read_lines(run / "silver" / "random.jsonl")) == 16
    # the test pair in the train file: dropped, counted, in the rejects file with its line, trained on nowhere
    assert report["gold"] == {"train": 13, "also_dev": 0, "also_test": 1, "dropped": 1, "kept": 12}
    rejects = read_lines(run / "data" / "train.rejects.jsonl")
    assert [(r["line"], r["reason"]) for r in rejects] == [(13, "also a test pair")]
    assert "1 dropped as dev or test pairs" in (run / "report.md").read_text()
    copied = pair_key(rejects[0]["text_a"], rejects[0]["text_b"])
    assert copied in {pair_key(r["text_a"], r["text_b"]) for r in read_lines(run / "data" / "test.jsonl")}
    for trained in ("data/train.jsonl", "train/augsbert.jsonl", "train/random.jsonl"):  # gold: data/train
        assert copied not in {pair_key(r["text_a"], r["text_b"]) for r in read_lines(run / trained)}, trained
    for summary in report["variants"].values():
        assert len(summary["per_seed"]["test"]) == 2 and summary["ci"]["test"] is not None
        assert summary["mean"]["test"] == pytest.approx(np.mean(summary["per_seed"]["test"]), abs=0.01)
    for name in ("augsbert", "random"):
        paired = report["versus_gold"][name]["test"]
        by_hand = np.subtract(
            report["variants"][name]["per_seed"]["test"], report["variants"]["gold"]["per_seed"]["test"]
        )
        assert paired["per_seed"] == pytest.approx(by_hand.tolist(), abs=0.011)
    assert json.loads((run / "report.json").read_text())["versus_gold"] == report["versus_gold"]
    assert "| **augsbert** |" in (run / "report.md").read_text()
    # training files: the gold pairs plus the teacher-scored silver pairs, each silver pair once
    train = read_lines(run / "train" / "augsbert.jsonl")
    assert len(train) == 12 + report["silver"]["augsbert"]["pairs"]
    assert len({r["id"] for r in train}) == len(train)
    assert all(0 <= r["label"] <= 1 for r in train)
    # the leak guard: the dev pair made of train sentences was proposed, dropped, and is in no silver file
    leak = pair_key(*(lambda r: (r["text_a"], r["text_b"]))(read_lines(tmp_path / "dev.jsonl")[0]))
    for method in ("semantic", "random"):  # every candidate pair of the 24 sentences (top_k 23)
        sampled = run / "silver" / f"sampled-{method}.jsonl"
        counts = json.loads(sampled.with_name(sampled.name + ".report.json").read_text())["dropped"]
        assert counts["excluded_pair"] >= 1, method
    silver_files = [f"sampled-{m}.jsonl" for m in ("bm25", "semantic", "random")]
    silver_files += [f"{v}{end}" for v in ("augsbert", "random") for end in (".jsonl", ".scored.jsonl")]
    for silver in (run / "silver" / name for name in silver_files):
        assert leak not in {pair_key(r["text_a"], r["text_b"]) for r in read_lines(silver)}, silver
    for variant in ("augsbert", "random"):
        assert leak not in {
            pair_key(r["text_a"], r["text_b"]) for r in read_lines(run / "train" / f"{variant}.jsonl")
        }

    first = _outputs(run)
    again = run_augsbert(load_augsbert_config(path))  # nothing changed: nothing recomputed, same numbers
    assert _outputs(run) == first and again["variants"] == report["variants"]

    data = yaml.safe_load(open(path))
    data["student"]["epochs"] = 2  # only the bi-encoders and their scores change
    open(path, "w").write(yaml.safe_dump(data))
    run_augsbert(load_augsbert_config(path))
    kept = ("data/train.jsonl", "teacher/model.safetensors", "teacher.eval.json", "start.eval.json")
    kept += ("silver/sampled-bm25.jsonl", "silver/augsbert.scored.jsonl", "train/random.jsonl")
    changed = ("seed0/gold/model.safetensors", "seed1/augsbert/model.safetensors", "seed1/random.eval.json")
    _same_except(_outputs(run), first, kept, changed)


def test_round_robin_takes_one_pair_per_method_in_turn_skipping_pairs_already_taken():
    from llmst.experiments.augsbert import round_robin

    def pools():
        bm25 = [{"id": i} for i in ("a", "b", "c", "d")]
        semantic = [{"id": i} for i in ("b", "e")]
        return [iter(bm25), iter(semantic)]

    def ids(rows):
        return [r["id"] for r in rows]

    # turn 1: a (bm25), b (semantic); turn 2: bm25 skips b, taken, for c; e (semantic)
    assert ids(round_robin(pools(), 4)) == ["a", "b", "c", "e"]
    assert ids(round_robin(pools(), 3)) == ["a", "b", "c"]  # the quota after de-duplication
    assert ids(round_robin(pools(), None)) == ["a", "b", "c", "e", "d"]  # every pair once
    assert ids(round_robin(pools(), 9)) == ["a", "b", "c", "e", "d"]  # fewer than the quota: all there are


def _transencoder_yaml(tmp_path, tiny_bert_dir, **extra) -> str:
    import yaml

    pairs = _gold(16, 300)  # their scores must not reach any model
    dev = _gold(8, 400)
    # a dev pair (reversed) among the unlabeled pairs: dropped, as are duplicates and a row without text
    pairs += [{"text_a": dev[0]["text_b"], "text_b": dev[0]["text_a"]}, dict(pairs[0])]
    pairs += [{"text_a": "a pair with one text", "text_b": " "}]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    write_jsonl(tmp_path / "dev.jsonl", [{**r, "label": r.pop("score")} for r in dev])
    write_jsonl(tmp_path / "test.jsonl", [{**r, "label": r.pop("score")} for r in _gold(8, 500)])
    config = {
        "out_dir": "run",
        "pairs": ["pairs.jsonl"],
        "dev": "dev.jsonl",
        "test": "test.jsonl",
        "start": tiny_bert_dir,
        "cycles": 2,
        "cross": _tiny(None, learning_rate=1e-3),
        "bi": _tiny(None, learning_rate=1e-3),
        "score": {"max_length": 32, "cache": False},
        **extra,
    }
    for section in ("cross", "bi"):
        config[section].pop("student")
    path = tmp_path / "transencoder.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_transencoder_cycles_report_and_rerun_only_changed_stages(tmp_path, tiny_bert_dir):
    import yaml

    from llmst.experiments.transencoder import load_transencoder_config, run_transencoder

    path = _transencoder_yaml(tmp_path, tiny_bert_dir)
    report = run_transencoder(load_transencoder_config(path))
    run = tmp_path / "run"
    for name in ("report.json", "report.md", "transencoder.png", "config.yaml"):
        assert (run / name).exists(), name
    assert report["pairs"] == {"read": 19, "duplicate": 1, "excluded_eval_pair": 1, "no_text": 1, "pairs": 16}
    rejected = read_lines(run / "pairs.rejects.jsonl")
    assert [(r["file"], r["line"]) for r in rejected] == [(str(tmp_path / "pairs.jsonl"), 19)]
    unlabeled = read_lines(run / "pairs.jsonl")
    assert len(unlabeled) == 16 and all(set(r) == {"id", "text_a", "text_b"} for r in unlabeled)
    chain = report["chains"][0]
    assert set(report["start"][chain]) == {"dev", "test"}
    assert [c["cycle"] for c in report["cycles"]] == [1, 2]
    for entry in report["cycles"]:
        assert entry["teacher"] == "bi-encoder"
        assert set(entry["bi"][chain]) == set(entry["cross"][chain]) == {"dev", "test"}
    # cycle 1: the start bi-encoder's clipped cosines teach the cross-encoder, on both orders of each pair
    labels = read_lines(run / "cycle1" / "bi-scores.jsonl")
    assert list(labels[0]["scores"]) == [chain] and all(0 <= r["score"] <= 1 for r in labels)
    assert len(read_lines(run / "cycle1" / "cross-train.jsonl")) == 32
    # cycle 2: the cycle-1 bi-encoder scores; the cross-encoder's scores teach each bi-encoder
    assert list(read_lines(run / "cycle2" / "bi-scores.jsonl")[0]["scores"]) == ["bi"]
    assert list(read_lines(run / "cycle2" / "cross-scores.jsonl")[0]["scores"]) == ["cross"]
    # symmetric: a cross-encoder scores both orders of each pair, the mean is the score (a cosine: one order)
    assert not (run / "cycle2" / "bi-scores.ab.jsonl").exists()
    for cycle in ("cycle1", "cycle2"):
        ab, ba = (
            {r["id"]: r for r in read_lines(run / cycle / f"cross-scores.{order}.jsonl")}
            for order in ("ab", "ba")
        )
        assert {ba[i]["text_a"] for i in ba} == {ab[i]["text_b"] for i in ab}
        merged = read_lines(run / cycle / "cross-scores.jsonl")
        assert len(merged) == 16 and any(ab[i]["score"] != ba[i]["score"] for i in ab)
        for row in merged:
            assert row["score"] == pytest.approx(
                (ab[row["id"]]["score"] + ba[row["id"]]["score"]) / 2, abs=2e-6
            )
    card = json.loads((run / "cycle2" / "bi" / "llmst_student.json").read_text())
    assert card["kind"] == "bi-encoder" and card["loss"].startswith("mse")
    assert "| 2 | bi-encoder |" in (run / "report.md").read_text()

    first = _outputs(run)
    again = run_transencoder(load_transencoder_config(path))
    assert _outputs(run) == first and again["cycles"] == report["cycles"]

    data = yaml.safe_load(open(path))
    data["bi"]["epochs"] = (
        2  # the first cross-encoder and its labels stay; each bi-encoder and what follows do not
    )
    open(path, "w").write(yaml.safe_dump(data))
    run_transencoder(load_transencoder_config(path))
    kept = (
        "pairs.jsonl",
        "cycle1/bi-scores.jsonl",
        "cycle1/cross/model.safetensors",
        "cycle1/cross-scores.jsonl",
    )
    changed = ("cycle1/bi/model.safetensors", "cycle2/bi-scores.jsonl", "cycle2/cross/model.safetensors")
    _same_except(_outputs(run), first, kept, changed)


def test_transencoder_mutual_distillation_with_an_llm_first_teacher(tmp_path, tiny_bert_dir, tiny_model_dir):
    import shutil

    from llmst.experiments.transencoder import load_transencoder_config, run_transencoder

    other = tmp_path / "other-bert"
    shutil.copytree(tiny_bert_dir, other)
    path = _transencoder_yaml(
        tmp_path,
        tiny_bert_dir,
        start=[tiny_bert_dir, str(other)],
        cycles=1,
        first_teacher=f"llm:{tiny_model_dir}",
        init="continue",
        symmetric=False,
    )
    report = run_transencoder(load_transencoder_config(path))
    run = tmp_path / "run"
    names = report["chains"]
    assert len(names) == 2 and names[1] == "other-bert"
    assert report["cycles"][0]["teacher"] == f"llm:{tiny_model_dir}"
    labels = read_lines(run / "cycle1" / "bi-scores.jsonl")  # the LLM judge's P(Yes), not a bi-encoder's
    assert len(labels) == 16 and list(labels[0]["scores"]) == [teacher_name(f"llm:{tiny_model_dir}")]
    assert not (run / "cycle1" / "cross-train.jsonl").exists()  # symmetric: false
    # mutual: both chains' cross-encoders score, and every bi-encoder learns their mean
    rescored = read_lines(run / "cycle1" / "cross-scores.jsonl")
    assert set(rescored[0]["scores"]) == {"cross-0", "cross-1"}
    for row in rescored:
        assert row["score"] == pytest.approx(np.mean(list(row["scores"].values())), abs=1e-6)
    assert all(
        (run / "cycle1" / f"{kind}-{k}" / "model.safetensors").exists()
        for kind in ("bi", "cross")
        for k in (0, 1)
    )
    assert set(report["cycles"][0]["bi"]) == set(names)


def test_bad_experiment_configs_are_one_clear_config_error(tmp_path, tiny_bert_dir):
    import yaml

    from llmst.experiments.augsbert import load_augsbert_config
    from llmst.experiments.transencoder import load_transencoder_config

    augsbert = yaml.safe_load(open(_augsbert_yaml(tmp_path, tiny_bert_dir)))
    transencoder = yaml.safe_load(open(_transencoder_yaml(tmp_path, tiny_bert_dir)))

    def load(loader, base, **change):
        config = {**base, **change}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}))
        return loader(path)

    cases = [
        (load_augsbert_config, augsbert, {"epochs": 2}, "unknown keys"),
        (load_augsbert_config, augsbert, {"data": {"train": "train.jsonl"}}, "data.test is required"),
        (load_augsbert_config, augsbert, {"data": {**augsbert["data"], "dev": "nope.jsonl"}}, "not found"),
        (load_augsbert_config, augsbert, {"seeds": 3}, "seeds must be"),
        (load_augsbert_config, augsbert, {"silver": 0}, "silver must be"),
        (
            load_augsbert_config,
            augsbert,
            {"silver": 1},
            r"silver \(1\) is less than the number of sample.methods",
        ),
        (load_augsbert_config, augsbert, {"sample": {"methods": ["bm25"], "new_only": False}}, "may not set"),
        (load_augsbert_config, augsbert, {"score": {"backend": "vllm"}}, "may not set"),
        (load_augsbert_config, augsbert, {"sample": {"methods": ["hard-negatives"]}}, "sample.methods"),
        (load_augsbert_config, augsbert, {"sample": {"methods": ["bm25"], "exclude": "x"}}, "may not set"),
        (load_augsbert_config, augsbert, {"sample": {"methods": ["bm25"], "top_k": 0}}, "top-k"),
        (load_augsbert_config, augsbert, {"student": {"seed": 3}}, "may not set"),
        (load_augsbert_config, augsbert, {"student": {"loss": "bce"}}, "does not train with"),
        (load_augsbert_config, augsbert, {"teacher": {"epochs": -1}}, "bad 'teacher' options|epochs"),
        (load_augsbert_config, augsbert, {"score": {"teachers": "x"}}, "may not set"),
        (load_augsbert_config, augsbert, {"out_dir": None}, "'out_dir' is required"),
        (load_transencoder_config, transencoder, {"cycles": 0}, "cycles must be"),
        (load_transencoder_config, transencoder, {"pairs": ["missing.jsonl"]}, "not found"),
        (load_transencoder_config, transencoder, {"start": ["a", "b", "c"]}, "one bi-encoder, or two"),
        (load_transencoder_config, transencoder, {"start": [tiny_bert_dir, tiny_bert_dir]}, "share a name"),
        (load_transencoder_config, transencoder, {"first_teacher": "gpt"}, "expected cross-encoder"),
        (
            load_transencoder_config,
            transencoder,
            {"first_teacher": f"bi-encoder:{tiny_bert_dir}"},
            "first_teacher",
        ),
        (load_transencoder_config, transencoder, {"init": "warm"}, "init must be"),
        (load_transencoder_config, transencoder, {"bi": {"loss": "marginmse"}}, "bi.loss must be"),
        (load_transencoder_config, transencoder, {"cross": {"student": "x"}}, "may not set"),
        (load_transencoder_config, transencoder, {"score": {"calibrate_on": "dev.jsonl"}}, "may not set"),
        (load_transencoder_config, transencoder, {"score": {"backend": "vllm"}}, "may not set"),
        (
            load_transencoder_config,
            transencoder,
            {"first_teacher": f"cross-encoder:{tiny_bert_dir}", "score": {"backend": "vllm"}},
            "vllm runs llm teachers only",
        ),
        (
            load_transencoder_config,
            transencoder,
            {"first_teacher": "llm:m", "score": {"backend": "openai"}},
            "needs --base-url",
        ),
    ]
    for loader, base, change, message in cases:
        with pytest.raises(ConfigError, match=message):
            load(loader, base, **change)


def test_transencoder_sends_only_the_first_teacher_to_the_score_backend(tmp_path, tiny_bert_dir):
    import yaml

    from llmst.experiments.transencoder import load_transencoder_config

    base = yaml.safe_load(open(_transencoder_yaml(tmp_path, tiny_bert_dir)))
    for backend in ({"backend": "vllm"}, {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}):
        path = tmp_path / "served.yaml"
        config = {**base, "first_teacher": "llm:judge", "score": {**base["score"], **backend}}
        path.write_text(yaml.safe_dump(config))
        loaded = load_transencoder_config(path)  # vllm was refused: validated against a cross-encoder
        assert loaded.scoring(first_teacher=True) == config["score"]
        trained = loaded.scoring(first_teacher=False)  # the cycle's bi- and cross-encoders: in-process
        assert trained == base["score"]
        score = ScoreConfig(**trained, teachers=[f"cross-encoder:{tiny_bert_dir}"])
        assert score.backend == "hf" and score.base_url is None


def test_the_commands_print_the_report_and_explain_a_bad_config(tmp_path, tiny_bert_dir):
    import os
    import subprocess
    import sys

    import yaml

    path = _transencoder_yaml(tmp_path, tiny_bert_dir, cycles=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "llmst", "transencoder", path],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("| cycle | pairs scored by |") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(open(path)), "cycles": 0}))
    for command in ("transencoder", "augsbert"):
        failed = subprocess.run(
            [sys.executable, "-m", "llmst", command, str(bad)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert (
            failed.returncode == 2
            and failed.stderr.startswith("error: ")
            and "Traceback" not in failed.stderr
        )
