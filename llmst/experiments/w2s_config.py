"""The `llmst w2s CONFIG.yaml` config: data, seeds, the weak supervisor, the strong student, transfer losses,
selection of weak labels. Validated before any work starts (every stage's options are built once here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from llmst.errors import ConfigError
from llmst.experiments.orchestration import build, read_experiment_yaml, resolver
from llmst.option_values import parse_names

TransferLoss = Literal["xent", "hard", "logconf"]
TRANSFER_LOSSES = get_args(TransferLoss)
WEAK_KINDS = ("student", "label", "ensemble")
CALIBRATED_SELECTORS = ("conformal", "learned")  # filter methods that need a gold calibration file
# Options w2s sets itself on every student it trains (per seed and per role); a config may not set them.
_OWNED_TRAIN_OPTIONS = {
    *("labels", "text_fields", "seed", "soft_labels", "loss", "gold", "gold_share", "progress", "overwrite")
}
_OWNED_LABEL_OPTIONS = {"calibration_from", "progress", "overwrite"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _train_options(options: dict[str, Any], section: str) -> dict[str, Any]:
    from llmst.train.config import TrainConfig

    owned = _OWNED_TRAIN_OPTIONS & set(options)
    if owned:
        raise ConfigError(
            f"w2s: '{section}' may not set {sorted(owned)}",
            hint="w2s sets them itself (labels and text fields from 'data', seed from 'seeds', loss from 'loss'; "
            "no progress bars, outputs replaced by signature)",
        )
    build(TrainConfig, options, section, owner="w2s")  # one clear error now, not after an hour of training
    return dict(options)


def _weak_member(spec: Any, section: str) -> dict[str, Any]:
    from llmst.label.config import LabelConfig

    if not isinstance(spec, dict):
        raise ConfigError(f"w2s: '{section}' must be a mapping", hint="e.g. {student: minilm-l6, epochs: 2}")
    if "label" in spec:
        if set(spec) != {"label"} or not isinstance(spec["label"], dict):
            raise ConfigError(
                f"w2s: '{section}' with 'label' takes only {{label: {{model: ..., task: ...}}}}"
            )
        owned = _OWNED_LABEL_OPTIONS & set(spec["label"])
        if owned:
            raise ConfigError(
                f"w2s: '{section}.label' may not set {sorted(owned)}",
                hint="w2s labels the test rows with B's calibration itself and runs without progress bars",
            )
        build(LabelConfig, spec["label"], f"{section}.label", owner="w2s", progress=False)
        return {"label": dict(spec["label"])}
    if "student" not in spec:
        raise ConfigError(
            f"w2s: '{section}' needs 'student', 'label' or 'ensemble'",
            hint="a trained weak model {student: minilm-l6, ...}, an LLM labeler {label: {model: ..., "
            "task: ...}}, or {ensemble: [...]} of either",
        )
    return _train_options(spec, section)


@dataclass
class W2SConfig:
    """A weak-to-strong experiment (Burns et al. 2023): see `llmst.experiments.w2s`."""

    out_dir: str
    data: dict[str, Any]
    weak: dict[str, Any]
    strong: dict[str, Any]
    n_train: int | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    loss: list[str] = field(default_factory=lambda: ["xent"])
    select: list[dict[str, Any]] = field(default_factory=list)
    min_gap: float = 0.02
    bootstrap: int = 1000
    calibration_rows: int = 0  # gold rows of A held out of weak training, for conformal/learned selection
    source: str | None = None  # the YAML file this came from

    def __post_init__(self) -> None:
        from llmst.filter.config import FilterConfig

        data = self.data if isinstance(self.data, dict) else {}
        for key in ("train", "test"):
            if not data.get(key):
                raise ConfigError(f"w2s: data.{key} is required (a gold-labeled file)")
            if not str(data[key]).startswith("hf:") and not Path(data[key]).exists():
                raise ConfigError(f"w2s: data.{key} not found: {data[key]}")
        unknown = set(data) - {"train", "test", "text_field", "gold_field", "labels", "id_field"}
        if unknown:
            raise ConfigError(f"w2s: unknown data keys {sorted(unknown)}")
        self.data = {
            "train": str(data["train"]),
            "test": str(data["test"]),
            "text_fields": parse_names(data.get("text_field"), "w2s: data.text_field") or ["text"],
            "gold_field": data.get("gold_field", "gold"),
            "labels": parse_names(data.get("labels"), "w2s: data.labels"),
            "id_field": data.get("id_field", "id"),
        }
        if self.data["labels"] is not None and len(self.data["labels"]) < 2:
            raise ConfigError("w2s: data.labels needs at least two labels")
        if isinstance(self.loss, str):
            self.loss = [self.loss]
        bad = [name for name in self.loss if name not in TRANSFER_LOSSES]
        if bad or not self.loss or len(set(self.loss)) != len(self.loss):
            raise ConfigError(
                f"w2s: loss must be one or more distinct of {list(TRANSFER_LOSSES)}, not {self.loss}"
            )
        if (
            not isinstance(self.seeds, list)
            or not self.seeds
            or not all(_is_int(seed) for seed in self.seeds)
            or len(set(self.seeds)) != len(self.seeds)
        ):
            raise ConfigError(
                "w2s: seeds must be a non-empty list of distinct integers", hint="seeds: [0, 1, 2]"
            )
        if self.n_train is not None and (not _is_int(self.n_train) or self.n_train < 4):
            raise ConfigError("w2s: n_train must be an integer >= 4 (it is split in halves A and B)")
        if (
            not isinstance(self.min_gap, int | float)
            or isinstance(self.min_gap, bool)
            or not 0 <= self.min_gap < 1
            or not _is_int(self.bootstrap)
            or self.bootstrap < 100
        ):
            raise ConfigError("w2s: min_gap must be in [0, 1) and bootstrap >= 100")
        if not isinstance(self.weak, dict) or not isinstance(self.strong, dict):
            raise ConfigError("w2s: 'weak' and 'strong' must be mappings")
        weak = dict(self.weak)
        context = weak.pop("context", None)
        if "ensemble" in weak:
            members = weak["ensemble"]
            if set(weak) != {"ensemble"} or not isinstance(members, list) or len(members) < 2:
                raise ConfigError("w2s: weak.ensemble must be a list of at least two weak supervisors")
            self.weak = {"ensemble": [_weak_member(m, f"weak.ensemble[{i}]") for i, m in enumerate(members)]}
        else:
            self.weak = _weak_member(weak, "weak")
        if context is not None:
            if not isinstance(context, str) or not Path(context).is_file():
                raise ConfigError(
                    f"w2s: weak.context must be a debate file (llmst debate output), not {context!r}"
                )
            self.weak["context"] = context
        if "student" not in self.strong:
            raise ConfigError("w2s: 'strong' needs 'student'", hint="e.g. strong: {student: mpnet-base}")
        self.strong = _train_options(self.strong, "strong")
        if not isinstance(self.select, list) or not all(isinstance(s, dict) for s in self.select):
            raise ConfigError(
                "w2s: select must be a list of llmst filter options, e.g. [{method: per-class}]"
            )
        if not _is_int(self.calibration_rows) or self.calibration_rows < 0:
            raise ConfigError("w2s: calibration_rows must be a whole number >= 0")
        if (
            self.calibration_rows
            and self.n_train is not None
            and self.calibration_rows > self.n_train // 2 - 2
        ):
            raise ConfigError(
                f"w2s: calibration_rows ({self.calibration_rows}) leaves fewer than 2 rows of A "
                f"({self.n_train // 2}) to train the weak model"
            )
        for index, options in enumerate(self.select):
            owned = {"calibration", "gold_field"} & set(options)
            if owned:
                raise ConfigError(
                    f"w2s: select[{index}] may not set {sorted(owned)}",
                    hint="w2s holds calibration_rows gold rows of A out of weak training, has the weak "
                    "supervisor label them, and passes them to conformal/learned selection itself",
                )
            needs_gold = options.get("method") in CALIBRATED_SELECTORS
            if needs_gold and not self.calibration_rows:
                raise ConfigError(
                    f"w2s: select[{index}] ({options['method']}) needs gold rows the weak model never "
                    "trained on",
                    hint="set calibration_rows: 200 (a gold slice of A held out of weak training)",
                )
            placeholder = {"calibration": "<weak labels of A's calibration slice>"} if needs_gold else {}
            build(FilterConfig, {**options, **placeholder}, f"select[{index}]", owner="w2s")

    def weak_members(self) -> list[dict[str, Any]]:
        """The weak supervisors: one, or the ensemble's members."""
        if "ensemble" in self.weak:
            return self.weak["ensemble"]
        return [{k: v for k, v in self.weak.items() if k != "context"}]

    def variants(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        """(name, transfer loss, filter options or None) of every transfer model, in report order."""
        out: list[tuple[str, str, dict[str, Any] | None]] = [(loss, loss, None) for loss in self.loss]
        for index, options in enumerate(self.select):
            name = f"{self.loss[0]}+{options.get('method', 'threshold')}"
            if any(existing == name for existing, _, _ in out):
                name = f"{name}#{index}"
            out.append((name, self.loss[0], options))
        return out


def load_w2s_config(path: str | Path) -> W2SConfig:
    """Read and validate a w2s YAML; relative paths are taken from the YAML file's folder."""
    path = Path(path)
    data = read_experiment_yaml(path, W2SConfig, "w2s config", ("out_dir", "data", "weak", "strong"))
    base = path.resolve().parent
    resolve = resolver(base)

    def resolve_section(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: resolve_section(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve_section(v) for v in value]
        return resolve(value)

    for section in ("data", "weak", "strong", "select"):
        if section in data:
            data[section] = resolve_section(data[section])
    try:
        return W2SConfig(**data, source=str(path))
    except TypeError as error:
        raise ConfigError(f"{path}: {error}") from error
