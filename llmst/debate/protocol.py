"""Debate and consultancy protocols: the prompt file, who speaks on which turn, and each turn's prompt.

A debate over `turns` turns alternates Debater A and Debater B (A argues, B rebuts and lists flaws, A
counters, ...); the running transcript goes into every prompt. Consultancy is the one-sided baseline: a
single consultant argues for its assigned answer on every turn. Prompts are Jinja in a YAML file
(`prompts/debate/debate.yaml` is shipped), rendered in llmst's sandbox.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from llmst.backends.base import cut_at_stop
from llmst.errors import ConfigError
from llmst.label.task import sandboxed_template

PROTOCOLS = ("debate", "consultancy")


def _shipped_dir() -> Path:
    return Path(str(resources.files("llmst.prompts"))) / "debate"


def available_prompts() -> list[str]:
    return sorted(p.stem for p in _shipped_dir().glob("*.yaml"))


@dataclass
class DebatePrompts:
    """A prompt file: one template for every turn, per-protocol turn instructions, stop strings."""

    name: str
    prompt: str
    instructions: dict[str, list[str]]
    stop: list[str] = field(default_factory=list)
    version: str = "1"
    description: str = ""

    def __post_init__(self) -> None:
        for protocol in PROTOCOLS:
            entries = self.instructions.get(protocol)
            if not entries or not all(isinstance(e, str) for e in entries):
                raise ConfigError(
                    f"debate prompts '{self.name}': instructions.{protocol} must be a non-empty list of strings"
                )
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"debate prompts '{self.name}': stop must be a list of non-empty strings")
        self._template = sandboxed_template(self.prompt, f"debate prompts '{self.name}': bad template")

    def instruction(self, protocol: str, turn: int) -> str:
        """This turn's instruction; turns past the list repeat its last entry."""
        entries = self.instructions[protocol]
        return entries[min(turn, len(entries) - 1)]

    def render(self, variables: dict[str, Any]) -> str:
        from jinja2 import TemplateError

        try:
            return self._template.render(**variables)
        except TemplateError as err:
            raise ConfigError(f"debate prompts '{self.name}': template failed: {err}") from err

    def cut(self, text: str) -> str:
        """A completion cut at the first stop string (the model starting the next speaker's turn), stripped."""
        return cut_at_stop(text, self.stop).strip()

    def prompt_hash(self) -> str:
        payload = json.dumps(
            [self.name, self.version, self.prompt, self.instructions, self.stop], sort_keys=True
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def load_prompts(spec: str) -> DebatePrompts:
    """A shipped prompt file by name (`debate`) or a user's YAML file."""
    path = Path(spec)
    if not spec.endswith((".yaml", ".yml")):
        path = _shipped_dir() / f"{spec}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown debate prompts '{spec}'", hint="available: " + ", ".join(available_prompts())
            )
    elif not path.is_file():
        raise ConfigError(f"debate prompts file not found: {spec}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"debate prompts {spec} are not valid YAML: {err}") from err
    if not isinstance(data, dict) or "prompt" not in data or "instructions" not in data:
        raise ConfigError(f"debate prompts {spec} need 'prompt' and 'instructions' keys")
    known = {"name", "prompt", "instructions", "stop", "version", "description"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(
            f"debate prompts {spec}: unknown keys {sorted(unknown)}", hint=f"known: {sorted(known)}"
        )
    data.setdefault("name", path.stem)
    data["version"] = str(data.get("version", "1"))
    return DebatePrompts(**data)


def assign(row_id: str, answers: list[str], seed: int, protocol: str) -> dict[str, str]:
    """Who defends what, seeded per row: debate {"A": .., "B": ..} (the two answers in a random order);
    consultancy {"Consultant": one of the two at random}."""
    rng = random.Random(f"{seed}:{row_id}")
    first, second = (answers[0], answers[1]) if rng.random() < 0.5 else (answers[1], answers[0])
    if protocol == "consultancy":
        return {"Consultant": first}
    return {"A": first, "B": second}


def speakers(protocol: str, turns: int) -> list[str]:
    """The speaker of every turn: A, B, A, ... (debate) or the consultant on every turn."""
    if protocol == "consultancy":
        return ["Consultant"] * turns
    return ["A" if turn % 2 == 0 else "B" for turn in range(turns)]


def turn_variables(
    protocol: str,
    turn: int,
    speaker: str,
    question: str,
    context: str,
    assigned: dict[str, str],
    transcript: list[dict[str, str]],
    instruction: str,
) -> dict[str, Any]:
    """The template variables of one turn's prompt."""
    variables: dict[str, Any] = {
        "question": question,
        "context": context,
        "answer": assigned[speaker],
        "answers": assigned,
        "transcript": transcript,
        "speaker": speaker,
        "turn": turn,
        "instruction": instruction,
    }
    if protocol == "debate":
        variables["opponent_answer"] = assigned["B" if speaker == "A" else "A"]
    return variables
