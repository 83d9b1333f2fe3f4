"""`llmst tune`: cross-validated prompt choice on gold rows, with a tiny random-init model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml
from conftest import read_lines, write_jsonl

from llmst.errors import ConfigError
from llmst.label.config import LabelConfig
from llmst.label.run import label_corpus
from llmst.tune import TuneConfig
from llmst.tune.run import run_tune


def gold_rows(n: int) -> list[dict]:
    return [
        {"id": f"g{i}", "text": f"message {i}: {'win cash now' if i % 3 == 0 else 'see you at lunch'} {i * 3}",
         "gold": "spam" if i % 3 == 0 else "ham"}
        for i in range(n)
    ]  # fmt: skip


def tune_config(tmp_path, model: str, **options) -> TuneConfig:
    defaults = dict(
        labels="spam,ham", model=model, dtype="float32", folds=3, shots="0,2", cache_path=str(tmp_path / "c.sqlite"),
        progress=False,
    )  # fmt: skip
    defaults.update(options)
    return TuneConfig(**defaults)


def test_tune_scores_every_candidate_out_of_fold_and_writes_a_usable_task(tmp_path, tiny_model_dir):
    dev = write_jsonl(tmp_path / "dev.jsonl", gold_rows(18))
    out = tmp_path / "spam.yaml"
    # contextual needs a second labeling pass per fold: left out for speed
    calibrations = "none,prior,prior-estimated"
    report = run_tune(dev, out, tune_config(tmp_path, tiny_model_dir, calibrations=calibrations))
    candidates = report["candidates"]
    # 3 families x 2 verbalizer styles (exact, cased) x 2 shot counts x 3 calibrations, and the same for each
    # family whose label words were found (a random tiny model finds some, not always for every family)
    # the choice: the reference (classify/exact, 0-shot, prior: what `llmst label --labels` does) unless a
    # candidate beats it in >= 90% of paired bootstrap draws; then the best-scored such candidate
    chosen = {k: v for k, v in report["chosen"].items() if k not in ("draw", "reference", "beats_reference")}
    assert chosen in candidates
    reference = next(
        c for c in candidates if (c["prompt"], c["shots"], c["calibration"]) == ("classify/exact", 0, "prior")
    )
    if report["chosen"].get("reference"):
        assert chosen == reference
    else:
        assert report["chosen"]["beats_reference"] >= 0.9 and chosen["macro_f1"] > reference["macro_f1"]
        assert all(c["macro_f1"] >= chosen["macro_f1"] for c in candidates[: candidates.index(chosen)])
    assert len([c for c in candidates if not c["prompt"].endswith("/words")]) == 36
    assert len(candidates) == 36 + 6 * len(
        {c["prompt"] for c in candidates if c["prompt"].endswith("/words")}
    )
    assert all(c["macro_f1_interval"][0] <= c["macro_f1"] <= c["macro_f1_interval"][1] for c in candidates)
    assert candidates[0]["macro_f1"] == max(c["macro_f1"] for c in candidates)
    # no row is ever scored with a demonstration drawn from itself
    work = tmp_path / "spam.yaml.work"
    for fold in sorted((work / "folds").glob("fold*.jsonl")):
        scored = {r["id"] for r in read_lines(fold)}
        demos = {r["id"] for r in read_lines(work / "demos" / f"{fold.stem}-2-random.jsonl")}
        assert scored and demos and not scored & demos
    # the written task and options label a corpus as chosen
    options = yaml.safe_load((tmp_path / "spam.yaml.options.yaml").read_text())
    assert options["task"] == str(out)
    label_config = LabelConfig(
        **options,
        model=tiny_model_dir,
        dtype="float32",
        cache_path=str(tmp_path / "c.sqlite"),
        progress=False,
    )
    labeled = tmp_path / "labeled.jsonl"
    summary = label_corpus(dev, labeled, label_config)
    assert summary.labeled == 18 and set(read_lines(labeled)[0]["probs"]) == {"spam", "ham"}
    saved = json.loads((tmp_path / "spam.yaml.report.json").read_text())
    assert saved["chosen"] == report["chosen"] and saved["candidates"] == report["candidates"]
    with pytest.raises(ConfigError, match="exists"):
        run_tune(dev, out, tune_config(tmp_path, tiny_model_dir))


def test_tune_knn_demonstrations_come_from_the_other_folds_and_travel_with_the_task(tmp_path, tiny_model_dir):
    dev = write_jsonl(tmp_path / "dev.jsonl", gold_rows(18))
    out = tmp_path / "spam.yaml"
    config = tune_config(tmp_path, tiny_model_dir, shots="2", select="knn", calibrations="prior")
    report = run_tune(dev, out, config)
    assert report["chosen"]["shots"] == 2
    # 3 families x 2 styles (exact, cased), and a found-words candidate for each family with words found
    exact_and_cased = [c for c in report["candidates"] if not c["prompt"].endswith("/words")]
    found = {c["prompt"] for c in report["candidates"] if c["prompt"].endswith("/words")}
    assert len(exact_and_cased) == 6 and len(report["candidates"]) == 6 + len(found)
    work = tmp_path / "spam.yaml.work"
    every = {r["id"] for r in gold_rows(18)}
    for fold in sorted((work / "folds").glob("fold*.jsonl")):
        scored = {r["id"] for r in read_lines(fold)}
        pool = read_lines(work / "demos" / f"{fold.stem}-2-knn.jsonl")
        # kNN picks each scored row's neighbours from the other folds' rows, never from its own fold
        assert {r["id"] for r in pool} == every - scored and all("_gold" not in r for r in pool)
        assert all(r["label"] == r["gold"] for r in pool)
    options = yaml.safe_load((tmp_path / "spam.yaml.options.yaml").read_text())
    assert options["select"] == "knn" and options["shots"] == 2
    assert {r["id"] for r in read_lines(options["few_shot"])} == every  # the corpus draws from all gold rows
    labeled = tmp_path / "labeled.jsonl"
    label_config = LabelConfig(
        **options,
        model=tiny_model_dir,
        dtype="float32",
        cache_path=str(tmp_path / "c.sqlite"),
        progress=False,
    )
    assert label_corpus(dev, labeled, label_config).labeled == 18


def test_tune_bad_inputs(tmp_path, tiny_model_dir):
    rows = gold_rows(9)
    rows[4]["gold"] = "eggs"
    dev = write_jsonl(tmp_path / "dev.jsonl", rows)
    with pytest.raises(ConfigError, match="line 5: gold field 'gold' is 'eggs'"):
        run_tune(dev, tmp_path / "t.yaml", tune_config(tmp_path, tiny_model_dir))
    few = write_jsonl(tmp_path / "few.jsonl", gold_rows(4))
    with pytest.raises(ConfigError, match="needs at least 6"):
        run_tune(few, tmp_path / "t.yaml", tune_config(tmp_path, tiny_model_dir))
    for options, message in [
        ({"calibrations": "none,magic"}, "unknown"),
        ({"shots": "0,x"}, "whole numbers"),
        ({"folds": 1}, "folds"),
        ({"select": "nearest"}, "select"),
        ({"labels": None}, "give --task or --labels"),
    ]:
        with pytest.raises(ConfigError, match=message):
            tune_config(tmp_path, tiny_model_dir, **options)


def test_gold_share_priors_are_smoothed_and_every_choice_writes_valid_label_options(tmp_path, tiny_model_dir):
    import numpy as np

    from llmst.tune.run import _write_choice, gold_shares

    gold = np.array([0, 0, 0, 1])
    assert gold_shares(gold, 2).tolist() == pytest.approx([4 / 6, 2 / 6])  # add-one smoothed
    half = gold_shares(gold, 2, 0.5)
    assert half.tolist() == pytest.approx([2 / (2 + 2**0.5), 2**0.5 / (2 + 2**0.5)])
    assert gold_shares(np.array([1, 1]), 3).min() > 0  # an unseen label keeps a share
    # every calibration candidate, once chosen, writes options `llmst label` accepts
    rows = [{"id": f"r{i}", "text": "t", "_gold": i % 3 == 0} for i in range(9)]
    config = tune_config(tmp_path, tiny_model_dir)
    task = LabelConfig(labels="spam,ham").build_task()
    for calibration in ("none", "prior", "prior-gold", "prior-gold-half", "prior-estimated", "contextual"):
        best = {"calibration": calibration, "shots": 0, "macro_f1": 0.5}
        out = tmp_path / f"{calibration}.yaml"
        _write_choice(out, "dev.jsonl", config, task, best, rows, ["spam", "ham"], [best], [], None, [])
        options = yaml.safe_load(out.with_name(out.name + ".options.yaml").read_text())
        label_config = LabelConfig(**options, model=tiny_model_dir)
        if calibration == "prior-gold":  # 3 of 9 rows are ham (index 1): shares (6+1)/11, (3+1)/11
            assert [float(s) for s in label_config.prior.split(",")] == pytest.approx(
                [7 / 11, 4 / 11], abs=1e-4
            )


def test_a_few_shot_choice_deploys_the_best_of_several_draws(tmp_path, tiny_model_dir):
    """`--draws 3`: three label-stratified draws of all gold rows, each scored on the rows outside it; the
    written demonstrations are the best draw's; `--draws 1` writes the single seeded draw, unscored."""
    dev = write_jsonl(tmp_path / "dev.jsonl", gold_rows(18))
    out = tmp_path / "spam.yaml"
    config = tune_config(tmp_path, tiny_model_dir, shots="2", calibrations="none,prior", draws=3)
    report = run_tune(dev, out, config)
    draws = report["draws"]
    assert [d["seed"] for d in draws] == [0, 1000, 2000] and all(d["rows"] == 16 for d in draws)
    best = max(draws, key=lambda d: (d["macro_f1"], -d["draw"]))
    assert report["chosen"]["draw"] == best["draw"]
    work = tmp_path / "spam.yaml.work" / "draws"
    written = read_lines(tmp_path / "spam.yaml.demos.jsonl")
    assert written == read_lines(work / f"demos{best['draw']}.jsonl")
    assert sorted(r["label"] for r in written) == ["ham", "spam"]  # stratified
    for d in draws:  # a draw is never scored on its own demonstrations
        demos = {r["id"] for r in read_lines(work / f"demos{d['draw']}.jsonl")}
        scored = {r["id"] for r in read_lines(work / f"rest{d['draw']}.jsonl")}
        assert len(demos) == 2 and not demos & scored and len(scored) == 16
        labeled = read_lines(work / f"labeled{d['draw']}.jsonl")
        assert {r["id"] for r in labeled} == scored
    single = run_tune(dev, tmp_path / "one.yaml", replace(config, draws=1))
    assert single["draws"] == [] and "draw" not in single["chosen"]
    assert read_lines(tmp_path / "one.yaml.demos.jsonl") == read_lines(work / "demos0.jsonl")
    with pytest.raises(ConfigError, match="--draws must be >= 1"):
        tune_config(tmp_path, tiny_model_dir, draws=0)


def test_label_words_are_found_on_the_other_folds_and_deployed_from_all_rows(
    tmp_path, tiny_model_dir, monkeypatch
):
    """`--label-words`: each fold is scored with words chosen without its rows; the written task pools the
    words chosen on all gold rows."""
    import numpy as np

    import llmst.tune.run as tune_run

    calls = []

    def spy(own, logprobs, gold, words, task, per_label):
        calls.append(len(gold))
        # a stand-in choice that depends on which rows it saw (the real one is tested below)
        return {"spam": [words[int(np.argmax(logprobs.sum(axis=0)))]], "ham": []}

    monkeypatch.setattr(tune_run, "choose_words", spy)
    dev = write_jsonl(tmp_path / "dev.jsonl", gold_rows(18))
    out = tmp_path / "spam.yaml"
    config = tune_config(tmp_path, tiny_model_dir, shots="0", calibrations="prior", label_words=2)
    report = run_tune(dev, out, config)
    assert calls == [12, 12, 12, 18] * 3  # 3 folds of 6 rows, then all rows; for each of 3 families
    words = [c for c in report["candidates"] if c["prompt"].endswith("/words")]
    assert len(words) == 3 and all(len(c["words"]["spam"]) == 1 for c in words)
    work = tmp_path / "spam.yaml.work"
    for candidate in words:
        deployed = yaml.safe_load(open(candidate["task_file"]))["labels"]
        assert deployed["spam"] == [" spam", *candidate["words"]["spam"]] and deployed["ham"] == [" ham"]
        name = candidate["prompt"].replace("/", "-")
        assert len(list((work / "tasks").glob(f"{name}-f*.yaml"))) == 3
    off = run_tune(dev, tmp_path / "off.yaml", replace(config, label_words=0))
    assert not any(c["prompt"].endswith("/words") for c in off["candidates"])
    # no word found on any fold nor on all rows: the candidate would repeat the exact one, so it is skipped
    monkeypatch.setattr(tune_run, "choose_words", lambda *args: {"spam": [], "ham": []})
    none = run_tune(dev, tmp_path / "none.yaml", config)
    assert not any(c["prompt"].endswith("/words") for c in none["candidates"])
    assert len(none["candidates"]) == len(off["candidates"])
    with pytest.raises(ConfigError, match="--label-words must be >= 0"):
        tune_config(tmp_path, tiny_model_dir, label_words=-1)


def test_choose_words_picks_words_that_separate_the_labels():
    """A word likelier on one label's rows joins that label when pooling it makes the gold labels likelier;
    words that do not separate, or are already verbalizers, never join; `per_label` caps each label."""
    import numpy as np

    from llmst.label.task import adhoc_task
    from llmst.tune.verbalizers import choose_words

    rng = np.random.default_rng(0)
    n = 60
    gold = np.arange(n) % 2  # 0 = negative, 1 = positive
    task = adhoc_task(["negative", "positive"])
    own = np.log(np.full((n, 2), 0.05)) + rng.normal(0, 0.01, (n, 2))  # the label names carry no signal
    words = [" bad", " awful", " the", " positive", " good"]
    logprobs = np.log(np.full((n, len(words)), 0.02)) + rng.normal(0, 0.01, (n, len(words)))
    logprobs[gold == 0, 0] = np.log(0.2)  # ' bad' on negative rows
    logprobs[gold == 0, 1] = np.log(0.12)  # ' awful' on negative rows
    logprobs[gold == 1, 3] = np.log(0.5)  # ' positive' separates but is already a verbalizer
    logprobs[gold == 1, 4] = np.log(0.2)  # ' good' on positive rows
    assert choose_words(own, logprobs, gold, words, task, 3) == {
        "negative": [" bad", " awful"],
        "positive": [" good"],
    }
    assert choose_words(own, logprobs, gold, words, task, 1) == {"negative": [" bad"], "positive": [" good"]}
    flat = np.log(np.full((n, len(words)), 0.02))  # nothing separates: nothing joins
    assert choose_words(own, flat, gold, words, task, 3) == {"negative": [], "positive": []}


def test_tune_keeps_the_reference_unless_a_candidate_beats_it_firmly():
    import numpy as np

    from llmst.tune.run import _choose

    gold = np.array([0, 1] * 50)
    reference = ("classify/exact", 0, "prior")
    ref_pred = gold.copy()
    ref_pred[:30] = 1 - ref_pred[:30]  # 70 of 100 right
    close = ref_pred.copy()
    close[:1] = gold[:1]  # 71 right: better on cross-validation, but not firmly
    firm = gold.copy()
    firm[:5] = 1 - firm[:5]  # 95 right
    rows = {
        reference: {"prompt": reference[0], "shots": 0, "calibration": "prior", "macro_f1": 0.70},
        ("statement/exact", 0, "none"): {
            "prompt": "statement/exact",
            "shots": 0,
            "calibration": "none",
            "macro_f1": 0.71,
        },
        ("classify/exact", 4, "prior"): {
            "prompt": "classify/exact",
            "shots": 4,
            "calibration": "prior",
            "macro_f1": 0.95,
        },
    }
    preds = {reference: ref_pred, ("statement/exact", 0, "none"): close, ("classify/exact", 4, "prior"): firm}
    ranked = sorted(rows.values(), key=lambda r: -r["macro_f1"])
    chosen = _choose(ranked[1:], preds, gold, 2, reference, seed=0)  # without the firm winner
    assert (chosen["prompt"], chosen["shots"], chosen["calibration"]) == reference
    chosen = _choose(ranked, preds, gold, 2, reference, seed=0)
    assert (chosen["shots"], chosen["beats_reference"]) == (4, 1.0)
    # no reference among the candidates (e.g. --calibrations none): the best score wins
    assert _choose(ranked[:2], preds, gold, 2, ("question/exact", 0, "prior"), seed=0) is ranked[0]
