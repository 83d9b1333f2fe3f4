"""The stage contract: one declaration per option, signatures, light configs, no import cycles, clean errors."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import write_jsonl

from llmst.aggregate.config import AggregateConfig
from llmst.cli_options import options_markdown
from llmst.debate.config import DebateConfig
from llmst.evaluate.config import EvaluateConfig
from llmst.filter.config import FilterConfig
from llmst.label.config import LabelConfig
from llmst.label.merge import MergeConfig
from llmst.pairs.config import EvaluatePairsConfig, SampleConfig, ScoreConfig
from llmst.stage import fingerprint, is_current, runtime, signature, signature_fields, write_marker
from llmst.train.config import PredictConfig, TrainConfig
from llmst.tune.config import TuneConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llmst"
LLMST = [sys.executable, "-m", "llmst"]
COMMAND_CONFIGS = {
    "label": LabelConfig,
    "merge": MergeConfig,
    "filter": FilterConfig,
    "aggregate": AggregateConfig,
    "train": TrainConfig,
    "predict": PredictConfig,
    "evaluate": EvaluateConfig,
    "tune": TuneConfig,
    "debate": DebateConfig,
    "pairs sample": SampleConfig,
    "pairs score": ScoreConfig,
    "evaluate-pairs": EvaluatePairsConfig,
}
CONFIG_MODULES = [
    "llmst.label.config",
    "llmst.label.merge",
    "llmst.filter.config",
    "llmst.aggregate.config",
    "llmst.train.config",
    "llmst.evaluate.config",
    "llmst.tune.config",
    "llmst.debate.config",
    "llmst.pairs.config",
]


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(LLMST + args, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


# --- modules -------------------------------------------------------------------------------------------


def test_no_module_over_500_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long


def _top_level_imports(path: Path, module: str) -> set[str]:
    """llmst modules imported at module level (imports inside functions run later and cannot cycle)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        nodes = [node] if not isinstance(node, ast.If | ast.Try) else list(ast.walk(node))
        for item in nodes:
            if isinstance(item, ast.Import):
                found |= {a.name for a in item.names if a.name.startswith("llmst")}
            elif isinstance(item, ast.ImportFrom):
                base = item.module or ""
                if item.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - item.level + 1] + [base]
                    ).strip(".")
                if base.startswith("llmst"):
                    found.add(base)
                    found |= {f"{base}.{a.name}" for a in item.names}
    return found


def test_module_import_graph_has_no_cycles():
    modules = set(_modules())
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = {m for m in _top_level_imports(path, name) if m in modules and m != name}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_every_module_imports_alone_in_a_fresh_process():
    # llmst.__main__ runs the CLI when imported
    optional = {"llmst.backends.vllm", "llmst.__main__"}

    def load(module: str) -> tuple[str, int, str]:
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT
        )
        return module, done.returncode, done.stderr[-800:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(load, [m for m in _modules() if m not in optional]))
    failed = [(m, err) for m, code, err in results if code != 0]
    assert not failed, failed


@pytest.mark.parametrize("module", CONFIG_MODULES + ["llmst.cli", "llmst.experiments", "llmst.stage"])
def test_configs_and_cli_do_not_import_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


# --- configs -> CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMAND_CONFIGS))
def test_every_config_field_documented_and_every_choice_listed_in_help(command, tmp_path):
    config_cls = COMMAND_CONFIGS[command]
    hints = typing.get_type_hints(config_cls)
    result = run([*command.split(), "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    help_text = re.sub(r"\s+", " ", result.stdout)
    for item in dataclasses.fields(config_cls):
        assert item.metadata.get("help"), f"{config_cls.__name__}.{item.name} has no help"
        hint = hints[item.name]
        literal = next(
            (a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is typing.Literal), None
        )
        if literal is not None and not item.metadata.get("cli_skip"):
            for choice in typing.get_args(literal):
                assert str(choice) in help_text, f"{command} --help does not list {item.name}={choice}"


def test_shared_concepts_have_one_spelling():
    """The same concept is the same field (and so the same option) in every stage that has it."""
    spellings = {"overwrite", "progress", "seed", "limit", "text_fields", "gold_field", "id_field"}
    for config_cls in COMMAND_CONFIGS.values():
        names = {f.name for f in dataclasses.fields(config_cls)}
        for wrong in ("quiet", "no_cache", "text_field", "gold", "overwrite_output", "n_rows"):
            if wrong == "gold" and config_cls is TrainConfig:
                continue  # --gold FILE is a different concept (gold rows mixed into training)
            assert wrong not in names, (config_cls.__name__, wrong)
        assert names & spellings or config_cls is AggregateConfig, config_cls


def test_readme_option_tables_are_generated_from_the_configs():
    readme = (ROOT / "README.md").read_text()
    for command, config_cls in COMMAND_CONFIGS.items():
        match = re.search(rf"<!-- options: {command} -->\n(.*?)<!-- /options -->", readme, re.S)
        assert match, f"README has no generated option table for {command}"
        assert match.group(1) == options_markdown(config_cls), (
            f"README option table of {command} is stale: run `python scripts/readme_options.py`"
        )


def test_config_file_fills_options_and_command_line_wins(tmp_path, tiny_model_dir):
    rows = [{"id": str(i), "text": f"a fine film number {i}"} for i in range(6)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    options = tmp_path / "opts.yaml"
    options.write_text(f"task: sentiment\nmodel: {tiny_model_dir}\nlimit: 2\ndtype: float32\nno-such: 1\n")
    bad = run(["label", str(src), "-o", str(tmp_path / "o.jsonl"), "--config", str(options)], tmp_path)
    assert bad.returncode == 2 and "unknown options ['no_such']" in bad.stderr
    options.write_text(
        f"task: sentiment\nmodel: {tiny_model_dir}\nlimit: 2\ndtype: float32\nprogress: false\n"
    )
    cache = str(tmp_path / "c.sqlite")
    done = run(
        [
            "label",
            str(src),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--config",
            str(options),
            "--limit",
            "3",
            "--cache-path",
            cache,
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 3  # --limit 3 beat the file's 2


def test_config_files_read_yaml_1_2_floats_and_name_a_wrong_number_type(tmp_path):
    """PyYAML reads `1e-5` (no dot) as a string; a config file must give the float. A value of the wrong type
    for a number or boolean option is one ConfigError naming the option, not a TypeError from inside."""
    from llmst.cli_options import build_config, load_config_file
    from llmst.errors import ConfigError

    options = tmp_path / "opts.yaml"
    options.write_text("learning_rate: 1e-5\nwarmup-ratio: 5E-2\nbatch_size: 8\nepochs: 3\nbf16: false\n")
    values = load_config_file(options, TrainConfig)
    assert values == {
        "learning_rate": 1e-5,
        "warmup_ratio": 0.05,
        "batch_size": 8,
        "epochs": 3,
        "bf16": False,
    }
    assert build_config(TrainConfig, values).learning_rate == 1e-5
    for text, message in (
        ("learning_rate: abc", "--learning-rate: expected a number, got 'abc'"),
        ("learning_rate: '1e-5'", "--learning-rate: expected a number, got '1e-5'"),
        ("batch_size: 8.5", "--batch-size: expected a whole number, got 8.5"),
        ("batch_size: true", "--batch-size: expected a whole number, got True"),
        ("bf16: 1", "--bf16: expected true or false, got 1"),
    ):
        options.write_text(text + "\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            build_config(TrainConfig, load_config_file(options, TrainConfig))


# --- usage errors ----------------------------------------------------------------------------------------


def _assert_one_error_line(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert sum(line.startswith("error:") for line in lines) == 1, result.stderr
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), result.stderr


def test_usage_errors_are_one_error_line_and_exit_2(tmp_path):
    corpus = write_jsonl(tmp_path / "x.jsonl", [{"text": "fine"}])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "g": "positive"}])
    bad_w2s = tmp_path / "w2s.yaml"  # a transfer loss that does not exist
    bad_w2s.write_text(
        f"out_dir: r\ndata: {{train: {bad}, test: {bad}}}\nweak: {{student: minilm-l6}}\n"
        "strong: {student: mpnet-base}\nloss: mse\n"
    )
    cases = [
        [],
        ["label"],
        ["label", "x", "-o", "y", "--no-such-option"],
        ["label", str(corpus), "-o", "y", "--prior", "0.5,x"],
        ["evaluate", str(bad), "--gold-field", "g"],
        ["evaluate", str(tmp_path / "missing.jsonl")],
        ["evaluate", str(bad), "--bins", "0"],
        ["label", str(corpus), "-o", "y"],  # no --task and no --labels
        ["label", str(corpus), "-o", "y", "--task", "sentiment", "--calibrate", "magic"],
        ["label", str(corpus), "-o", "y", "--task", "sentiment", "--limit", "0"],
        ["label", str(corpus), "-o", "y", "--labels", "a,b", "--label-descriptions", 'a="x"'],
        ["label", str(corpus), "-o", "y", "--task", "sentiment", "--orders", "2"],
        ["label", str(corpus), "-o", "y", "--task", "sentiment", "--prior", "estimate-it"],
        ["filter", str(corpus), "-o", "y", "--method", "nope"],
        ["filter", str(corpus), "-o", "y"],  # records without probs
        ["train", str(corpus), "-o", str(tmp_path / "m"), "--epochs", "0"],
        ["predict", str(tmp_path), str(corpus), "-o", "y", "--limit", "-1"],
        ["aggregate", "-o", "y"],
        ["selftrain", str(tmp_path / "missing.yaml")],
        ["w2s", str(tmp_path / "missing.yaml")],
        ["w2s", str(bad_w2s)],
        ["debate", str(corpus), "-o", "y", "--protocol", "jury"],
        ["debate", str(corpus), "-o", "y", "--prompts", str(tmp_path / "none.yaml")],
        ["models", "install", "no-such-model"],
        ["nope"],
    ]
    for args in cases:
        result = run(args, tmp_path)
        try:
            _assert_one_error_line(result)
        except AssertionError as err:
            raise AssertionError(f"llmst {' '.join(args)}: {err}") from None
    assert "--prior" in run(cases[3], tmp_path).stderr
    assert "label" in run(cases[4], tmp_path).stderr  # names the missing field


def test_version(tmp_path):
    from llmst import __version__

    result = run(["--version"], tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"llmst {__version__}"


# --- signatures ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Toy:
    threshold: float = dataclasses.field(default=0.9, metadata={"help": "t"})
    batch_size: int = dataclasses.field(default=8, metadata=runtime("b"))


def test_signature_ignores_runtime_fields_and_follows_input_content(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "a"}\n')
    base = signature("toy", _Toy(), {"input": data})
    assert signature("toy", _Toy(batch_size=64), {"input": data}) == base
    assert signature("toy", _Toy(threshold=0.5), {"input": data}) != base
    assert signature("other", _Toy(), {"input": data}) != base
    before = fingerprint(data)
    data.write_text('{"text": "b"}\n')  # same size, other content
    assert fingerprint(data) != before
    assert signature("toy", _Toy(), {"input": data}) != base


def test_conditional_options_count_only_when_they_apply():
    ce = signature_fields(TrainConfig())
    assert "logconf_weight" not in ce and "lora_r" not in ce
    assert signature("train", TrainConfig(logconf_weight=0.5)) == signature("train", TrainConfig())
    logconf = TrainConfig(loss="logconf")
    assert signature_fields(logconf)["logconf_weight"] == 0.75
    assert signature("train", TrainConfig(loss="logconf", logconf_weight=0.5)) != signature("train", logconf)
    assert signature("train", TrainConfig(lora=True, lora_r=4)) != signature("train", TrainConfig(lora=True))


def test_markers_record_completion_under_one_signature(tmp_path):
    out = tmp_path / "out.jsonl"
    assert not is_current(out, "abc")
    out.write_text("x\n")
    assert not is_current(out, "abc")  # an output without a marker is not known to be complete
    write_marker(out, "abc")
    assert is_current(out, "abc") and not is_current(out, "abd")
    folder = tmp_path / "model"
    folder.mkdir()
    write_marker(folder, "f1")
    assert is_current(folder, "f1") and (folder / "llmst_signature.json").exists()
    (folder / "weights.bin").write_bytes(b"1")
    first = fingerprint(folder)
    (folder / "weights.bin").write_bytes(b"2")
    assert fingerprint(folder) != first
    second = fingerprint(folder)
    assert second != first
    write_marker(folder, "f2")  # the marker itself is not part of the folder's fingerprint
    assert fingerprint(folder) == second


def test_every_package_ships_in_the_wheel():
    """A package missing from pyproject's list works in the editable checkout and breaks `pip install llmst`."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in PACKAGE.rglob("__init__.py")} - {
        "llmst.prompts"
    }
    assert found <= listed, sorted(found - listed)
