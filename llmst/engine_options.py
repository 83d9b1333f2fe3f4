"""What `--engine ray` shares between the commands that take it (`llmst label`, `llmst predict`): the check of
its options, the folder of its parts, and starting or joining Ray."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmst.errors import ConfigError

RAY_HINT = 'install the Ray extra: pip install "llmst[ray]"'


def parts_dir(out: str | Path) -> Path:
    """Where `--engine ray` keeps the parts (or shards) of output `out`, and their manifest."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def check_ray_options(config: Any, ray_only: Sequence[str]) -> bool:
    """One ConfigError when options of --engine ray (`ray_only` fields set on `config`) come without it, or
    --num-workers is below 1; True when `config.engine` is ray."""
    given = [f"--{name.replace('_', '-')}" for name in ray_only if getattr(config, name) is not None]
    if config.engine != "ray":
        if given:
            raise ConfigError(
                f"{', '.join(given)}: options of --engine ray, given with --engine {config.engine}",
                hint="add --engine ray, or leave them out",
            )
        return False
    if config.num_workers is not None and config.num_workers < 1:
        raise ConfigError(f"--num-workers must be >= 1, got {config.num_workers}")
    return True


def ray_init(address: str | None, num_cpus: int | None) -> bool:
    """Join the Ray cluster at `address`, or start a local one with `num_cpus` CPUs (default: this machine's),
    unless Ray is already initialised; True when this call started it (and so must shut it down)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray, which is not installed", hint=RAY_HINT) from None
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), log_to_driver=False, configure_logging=False)
    return True
