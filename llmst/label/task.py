"""Tasks: labels with verbalizers and a sandboxed Jinja2 prompt template, loaded from YAML.

```yaml
task: sst2
labels:                      # label name -> verbalizer continuation(s); several are pooled (log-sum-exp)
  negative: [" negative"]
  positive: [" positive"]
prompt: 'Movie review: "{{ text }}"\nThe reviewer''s opinion of the movie is'
text_field: text             # or text_fields: [question, passage]; every record field is a template variable
instruction: ""              # optional, placed before the few-shot examples
example_separator: "\n\n"    # between few-shot examples and the query
content_free: ["N/A", "", "[MASK]"]   # inputs for contextual calibration
metadata: {version: 1}
```
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmst.errors import ConfigError


class TaskYamlLoader(yaml.SafeLoader):
    """Safe YAML where only true/false are booleans (as in YAML 1.2), so label keys such as `yes:`/`no:`
    or `on:`/`off:` stay the strings they read as, not True/False."""


TaskYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
TaskYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


def sandboxed_template(source: str, what: str):
    """`source` compiled as a Jinja template in the sandbox (undefined variables are errors); a syntax error
    is a ConfigError starting with `what` (every prompt template of llmst goes through here)."""
    try:
        return _ENV.from_string(source)
    except TemplateError as err:
        raise ConfigError(f"{what}: {err}") from err


@dataclass
class Task:
    name: str
    labels: dict[str, list[str]]
    prompt: str
    text_fields: list[str] = field(default_factory=lambda: ["text"])
    instruction: str = ""
    example_separator: str = "\n\n"
    content_free: list[str] = field(default_factory=lambda: ["N/A", "", "[MASK]"])
    version: str = "1"
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise ConfigError(f"task '{self.name}' needs at least two labels")
        for label, verbalizers in self.labels.items():
            if not verbalizers or not all(isinstance(v, str) and v for v in verbalizers):
                raise ConfigError(f"task '{self.name}': label '{label}' needs non-empty verbalizer strings")
        self._template = sandboxed_template(self.prompt, f"task '{self.name}': bad prompt template")

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """The task as task YAML keys (`load_task` reads it back to an equal task)."""
        return {
            "task": self.name,
            "description": self.description,
            "text_fields": self.text_fields,
            "labels": self.labels,
            "prompt": self.prompt,
            "instruction": self.instruction,
            "example_separator": self.example_separator,
            "content_free": self.content_free,
            "metadata": {"version": self.version},
        }

    def candidates(self) -> tuple[tuple[str, ...], list[int]]:
        """Flat tuple of all verbalizers and, for each, the index of its label."""
        flat, owner = [], []
        for index, verbalizers in enumerate(self.labels.values()):
            flat.extend(verbalizers)
            owner.extend([index] * len(verbalizers))
        return tuple(flat), owner

    def render(self, record: dict[str, Any], text: str) -> str:
        """Render the query prompt for one record; `text` is the (possibly truncated) joined text fields,
        except in a task with several text fields one of which is `text` (that variable stays the field)."""
        variables = dict(record)
        if len(self.text_fields) == 1 or "text" not in self.text_fields:
            variables["text"] = text
        try:
            return self._template.render(**variables)
        except TemplateError as err:
            raise ConfigError(f"task '{self.name}': prompt template failed: {err}") from err

    def render_example(self, record: dict[str, Any], text: str, label: str) -> str:
        """A solved few-shot example: the prompt followed by the label's first verbalizer."""
        return self.render(record, text) + self.labels[label][0]

    def prompt_hash(self, extra: str = "") -> str:
        payload = json.dumps(
            [
                self.name,
                self.version,
                self.labels,
                self.prompt,
                self.instruction,
                self.example_separator,
                extra,
            ],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def _prompts_dir() -> Path:
    return Path(str(resources.files("llmst.prompts")))


def available_tasks() -> list[str]:
    return sorted(p.stem for p in _prompts_dir().glob("*.yaml"))


def task_from_dict(data: dict[str, Any], default_name: str) -> Task:
    if not isinstance(data, dict) or "labels" not in data or "prompt" not in data:
        raise ConfigError(f"task '{default_name}' must be a mapping with 'labels' and 'prompt'")
    labels = data["labels"]
    if isinstance(labels, list):  # plain list of names: verbalizer = " " + name
        labels = {str(name): [f" {name}"] for name in labels}
    labels = {str(k): ([v] if isinstance(v, str) else list(v or [])) for k, v in labels.items()}
    text_fields = data.get("text_fields") or [data.get("text_field", "text")]
    meta = data.get("metadata") or {}
    return Task(
        name=str(data.get("task", default_name)),
        labels=labels,
        prompt=str(data["prompt"]),
        text_fields=[str(f) for f in text_fields],
        instruction=str(data.get("instruction", "")),
        example_separator=str(data.get("example_separator", "\n\n")),
        content_free=[str(c) for c in data.get("content_free", ["N/A", "", "[MASK]"])],
        version=str(meta.get("version", "1")),
        description=str(data.get("description", "")),
    )


def load_task(spec: str) -> Task:
    """Load a shipped task by name or a user's YAML file."""
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise ConfigError(f"task file not found: {spec}")
        source, name = path.read_text(encoding="utf-8"), path.stem
    else:
        shipped = _prompts_dir() / f"{spec}.yaml"
        if not shipped.is_file():
            raise ConfigError(f"unknown task '{spec}'", hint="available: " + ", ".join(available_tasks()))
        source, name = shipped.read_text(encoding="utf-8"), spec
    try:
        data = yaml.load(source, Loader=TaskYamlLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"task '{spec}' is not valid YAML: {err}") from err
    return task_from_dict(data, name)


# Ad-hoc prompt families (`llmst tune` chooses among them). `classify` is the default of `--labels`: on the
# suite's dev slices (eval/suite.py, SmolLM2-135M) its mean macro-F1 was 0.489, against 0.439 for
# `statement` and 0.373 for `question` (the prompt of llmst <= 0.4).
# `{head}`: instruction and label descriptions; `{body}`: the named text fields; `{choices}`: the labels.
ADHOC_FAMILIES = {
    "question": "{head}{body}Question: Which label fits the text best: {choices}?\nAnswer:",
    "classify": "{head}Classify the text as one of: {choices}.\n{body}Label:",
    "statement": "{head}{body}Of {choices}, this text is",
}
VERBALIZER_STYLES = ("exact", "cased")  # " name" alone, or pooled with " Name"


def adhoc_task(
    labels: list[str],
    text_fields: list[str] | None = None,
    instruction: str | None = None,
    descriptions: dict[str, str] | None = None,
    *,
    family: str = "classify",
    verbalizers: str = "exact",
) -> Task:
    """A task from `--labels a,b,c`: a generic classification prompt scored on ' a', ' b', ' c'.

    The prompt is the instruction (if any), the labels with their descriptions (if any), then the prompt
    family's frame around the text (`family`, one of `ADHOC_FAMILIES`). One text field renders as
    `Text: ...`; several render each under its own name (`Title: ...`, `Body: ...`), and a row missing any
    of them is rejected like in every task. `verbalizers="cased"` pools each label's ' name' with ' Name' (log-sum-exp).
    """
    names = [name.strip() for name in labels if name.strip()]
    if len(set(names)) != len(names):
        raise ConfigError("--labels has duplicate names")
    fields = list(text_fields or ["text"])
    for name in fields:
        if not name.isidentifier():
            raise ConfigError(
                f"--text-field '{name}' cannot be named in an ad-hoc prompt",
                hint="use field names made of letters, digits and _, or write a task YAML (--task FILE.yaml)",
            )
    if len(fields) == 1:
        body = "Text: {{ text }}\n"
    else:
        body = "".join(f"{_title(name)}: {{{{ {name} }}}}\n" for name in fields)
    head = ""
    if instruction:
        head += _literal(instruction.strip()) + "\n"
    if descriptions:
        head += "Labels:\n" + "".join(f"- {_literal(n)}: {_literal(descriptions[n])}\n" for n in names)
    choices = _literal(", ".join(names))
    prompt = ADHOC_FAMILIES[family].format(head=head, body=body, choices=choices)
    return Task(
        name="adhoc-" + "-".join(names),
        labels={name: _verbalizers(name, verbalizers) for name in names},
        prompt=prompt,
        text_fields=fields,
    )


def _verbalizers(name: str, style: str) -> list[str]:
    if style == "cased" and name[:1].upper() + name[1:] != name:
        return [f" {name}", f" {name[:1].upper()}{name[1:]}"]
    return [f" {name}"]


def _literal(text: str) -> str:
    """User text placed in a Jinja template verbatim (never evaluated as template code)."""
    if not any(mark in text for mark in ("{{", "{%", "{#", "}}", "%}", "#}")):
        return text
    return "{{ " + json.dumps(text) + " }}"


def _title(field_name: str) -> str:
    return field_name.replace("_", " ").strip().capitalize()
