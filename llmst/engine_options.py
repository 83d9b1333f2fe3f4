"""What `--engine ray` shares between the commands that take it (`llmst label`, `llmst predict`, `llmst pairs
score`): its options' fields and their check, the folder of its parts, starting or joining Ray, and running
shards as Ray tasks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path
from typing import Any

from llmst import stage
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


def ray_address_field() -> Any:
    """The `--ray-address` field of a stage config (runtime: where the work runs does not change it)."""
    return field(
        default=None,
        metadata=stage.runtime(
            "--engine ray: the cluster to join (e.g. auto, ray://HOST:10001); default: a local one."
        ),
    )


def num_workers_field(help_text: str) -> Any:
    """The `--num-workers` field of a stage config (runtime)."""
    return field(default=None, metadata=stage.runtime(help_text))


@contextmanager
def ray_task_slots(address: str | None, num_workers: int | None) -> Iterator[int]:
    """Start or join Ray for a run of shard tasks (`run_ray_tasks`); yields how many shards to cut: `num_workers`,
    else the cluster's CPUs. Shuts down a Ray this call started."""
    started = ray_init(address, num_workers)
    try:
        import ray

        yield num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    finally:
        if started:
            import ray

            ray.shutdown()


def run_ray_tasks(
    function: Callable[..., Any], calls: list[tuple[Any, ...]], progress: bool, what: str
) -> None:
    """`function(*args)` for every `args` of `calls`, as Ray tasks of one CPU each (torch in one thread), with a
    progress bar on the driver; a task's error is raised here, with its traceback."""
    import ray

    from llmst.progress import progress_bar

    task = ray.remote(num_cpus=1)(_on_one_cpu)
    pending = [task.remote(function, *args) for args in calls]
    with progress_bar(progress, len(calls), what=what, unit="") as bar:
        bar_task = bar.add_task("ray", total=len(calls), rate="-")
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
            bar.update(bar_task, advance=1)


def _on_one_cpu(function: Callable[..., Any], *args: Any) -> Any:
    """A Ray task of `run_ray_tasks`: it holds one CPU, so torch runs one thread."""
    one_torch_thread()
    return function(*args)


def one_torch_thread() -> None:
    """One torch thread in a Ray task or actor that holds one CPU (nothing without torch: an openai-backend
    worker needs none)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
