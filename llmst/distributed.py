"""Several processes of one launch (torchrun / accelerate launch): which rank this is, joining the process
group, and a barrier. Nothing here costs anything in a single process."""

from __future__ import annotations

import os
from datetime import timedelta

# A rank may wait this long at a barrier while the main process works alone (hours of LLM labeling in an
# experiment's stage); torch's default of 30 minutes would kill such a run.
DISTRIBUTED_TIMEOUT = timedelta(days=2)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def start_ranks() -> None:
    """Join the launch's process group (before the first barrier) with `DISTRIBUTED_TIMEOUT`; accelerate
    and the trainers reuse this group."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState(timeout=DISTRIBUTED_TIMEOUT)


def wait_for_ranks() -> None:
    """A barrier across the launch's processes (nothing in a single process)."""
    if world_size() > 1:
        start_ranks()  # PartialState is a singleton: a no-op once joined
        from accelerate import PartialState

        PartialState().wait_for_everyone()
