"""Regenerate the README's option tables from the stage configs: `python scripts/readme_options.py`.

Each table sits between `<!-- options: COMMAND -->` and `<!-- /options -->`; tests/test_contract.py fails
when one is stale.
"""

from __future__ import annotations

import re
from pathlib import Path

from llmst.aggregate.config import AggregateConfig
from llmst.cli_options import options_markdown
from llmst.debate.config import DebateConfig
from llmst.evaluate.config import EvaluateConfig
from llmst.filter.config import FilterConfig
from llmst.label.config import LabelConfig
from llmst.label.merge import MergeConfig
from llmst.pairs.config import EvaluatePairsConfig, SampleConfig, ScoreConfig
from llmst.train.config import PredictConfig, TrainConfig
from llmst.tune.config import TuneConfig

CONFIGS = {
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


def main() -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    for command, config_cls in CONFIGS.items():
        pattern = re.compile(rf"(<!-- options: {command} -->\n).*?(<!-- /options -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no '<!-- options: {command} -->' block")
        text = pattern.sub(lambda m, c=config_cls: m.group(1) + options_markdown(c) + m.group(2), text)
    readme.write_text(text)


if __name__ == "__main__":
    main()
