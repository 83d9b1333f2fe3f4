"""Typer commands generated from stage config dataclasses: every option is declared once, in the config.

Each field of a config becomes an option `--field-name` whose help is `metadata["help"]` and whose choices
come from a `Literal` type (as TRL's `TrlParser` builds argparse options from `SFTConfig`). Booleans are
flags: `--name` when the default is False, `--no-name` when it is True, `--quiet/-q` for `progress`, and
`--name/--no-name` when the default is None (auto). Lists are given comma-separated and parsed by the
config. Every generated command also takes `--config FILE.yaml`, a mapping of field names to values that
fills any option not given on the command line. Field metadata may set `cli` (the option's names, e.g.
`["--eval"]`) or `cli_skip` (not on the command line; still settable from `--config`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import operator
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import typer

from llmst.errors import ConfigError
from llmst.option_values import check_number_types
from llmst.stage import read_options_file

CONFIG_OPTION = "config_file"
# Option spellings that differ from the field name, the same in every command.
OPTION_NAMES = {"text_fields": "--text-field", "context_fields": "--context-field", "teachers": "--teacher"}


@dataclasses.dataclass(frozen=True)
class _Option:
    field: str  # config field name
    param: str  # python parameter name of the generated function
    invert: bool  # the flag means "not field" (--no-cache, --quiet)
    is_list: bool


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else functools.reduce(operator.or_, rest)), True
    return tp, False


def _option_for(item: dataclasses.Field, hint: Any) -> tuple[_Option, inspect.Parameter] | None:
    meta = item.metadata
    if meta.get("cli_skip"):
        return None
    base, optional = _strip_optional(hint)
    origin = typing.get_origin(base)
    default = item.default if item.default is not dataclasses.MISSING else None
    if item.default is dataclasses.MISSING and item.default_factory is not dataclasses.MISSING:
        default = item.default_factory()
    if origin is dict or base is dict:
        return None  # structured options come from --config only
    help_text = meta.get("help", "")
    dashed = OPTION_NAMES.get(item.name, "--" + item.name.replace("_", "-"))
    names = list(meta.get("cli", []))
    invert = False
    is_list = origin in (list, tuple) or base in (list, tuple)
    if base is bool:
        if item.name == "progress":
            names, invert, annotation, value = names or ["--quiet", "-q"], True, bool, False
        elif default is None:
            names, annotation, value = names or [f"{dashed}/--no-{dashed[2:]}"], bool | None, None
        elif default:
            names, invert, annotation, value = names or [f"--no-{dashed[2:]}"], True, bool, False
        else:
            names, annotation, value = names or [dashed], bool, False
    elif is_list:
        annotation = str | None
        value = ",".join(str(v) for v in default) if default else None
        if "comma" not in help_text:
            help_text += " (comma-separated)"
    elif origin is Literal:
        annotation = base if not optional else base | None
        value = default
    else:
        annotation = base | None if optional or default is None else base
        value = default
    names = names or [dashed]
    if invert:
        help_text = meta.get("flag_help") or (
            "No progress bar." if item.name == "progress" else f"Turn off: {help_text}"
        )
    param_name = item.name if item.name != CONFIG_OPTION else item.name + "_"
    parameter = inspect.Parameter(
        param_name,
        inspect.Parameter.KEYWORD_ONLY,
        default=value,
        # typer renders help as Rich markup: escaped, `pip install "llmst[ray]"` keeps its [ray]
        annotation=Annotated[annotation, typer.Option(*names, help=rich_escape(help_text))],
    )
    return _Option(item.name, param_name, invert, is_list), parameter


def config_options(config_cls: type) -> tuple[list[_Option], list[inspect.Parameter]]:
    """The CLI options of a config dataclass (in field order)."""
    hints = typing.get_type_hints(config_cls)
    options, params = [], []
    for item in dataclasses.fields(config_cls):
        built = _option_for(item, hints[item.name])
        if built is not None:
            options.append(built[0])
            params.append(built[1])
    return options, params


def load_config_file(path: Path, config_cls: type) -> dict[str, Any]:
    """Options from a YAML mapping of field names (dashes or underscores) to values."""
    data = read_options_file(path, "--config file")
    known = {f.name for f in dataclasses.fields(config_cls)}
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown options {unknown}", hint=f"known: {', '.join(sorted(known))}"
        )
    return values


def build_config(config_cls: type, values: dict[str, Any]) -> Any:
    """`config_cls(**values)`, with wrong types reported as a usage error instead of a traceback."""
    check_number_types(config_cls, values)
    try:
        return config_cls(**values)
    except TypeError as error:
        raise ConfigError(f"bad options: {error}") from error
    except ValueError as error:
        raise ConfigError(str(error)) from error


def add_config_command(
    app: typer.Typer,
    name: str,
    config_cls: type,
    run: Callable[..., None],
    *,
    arguments: Sequence[inspect.Parameter] = (),
    help: str | None = None,
) -> None:
    """Register command `name` whose options are `config_cls`'s fields; `run(config=..., **arguments)`."""
    options, params = config_options(config_cls)
    config_param = inspect.Parameter(
        CONFIG_OPTION,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--config", help="YAML file of options (field names as keys); options given here win."
            ),
        ],
    )
    explicit = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in arguments]
    all_params = [*explicit, *params, config_param]
    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)

    def command(ctx: typer.Context, **kwargs: Any) -> None:
        from_file = load_config_file(kwargs[CONFIG_OPTION], config_cls) if kwargs[CONFIG_OPTION] else {}
        values: dict[str, Any] = {}
        for option in options:
            source = ctx.get_parameter_source(option.param)
            given = source is not None and source.name != "DEFAULT"
            if option.field in from_file and not given:
                values[option.field] = from_file.pop(option.field)
                continue
            from_file.pop(option.field, None)
            value = kwargs[option.param]
            if option.invert:
                value = not value
            values[option.field] = value
        values.update(from_file)  # fields that are not command-line options (cli_skip, dicts)
        config = build_config(config_cls, values)
        run(config=config, **{p.name: kwargs[p.name] for p in explicit})

    command.__signature__ = inspect.Signature([ctx_param, *all_params])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in (ctx_param, *all_params)}
    command.__doc__ = help or run.__doc__
    command.__name__ = f"{name.replace('-', '_')}_cmd"
    app.command(name)(command)


def options_markdown(config_cls: type) -> str:
    """A markdown table of a config's command-line options (the README's option tables are generated)."""
    lines = ["| option | default | meaning |", "|---|---|---|"]
    _, params = config_options(config_cls)
    for param in params:
        info = typing.get_args(param.annotation)[1]
        decls = [info.default, *info.param_decls] if isinstance(info.default, str) else info.param_decls
        names = " ".join(f"`{n}`" for n in decls)
        base = typing.get_args(param.annotation)[0]
        choices = (
            typing.get_args(_strip_optional(base)[0])
            if typing.get_origin(_strip_optional(base)[0]) is Literal
            else ()
        )
        default = "" if param.default in (None, False) else f"`{param.default}`"
        meaning = rich_unescape(info.help).replace("|", "\\|")
        if choices:
            meaning += " One of: " + ", ".join(f"`{c}`" for c in choices) + "."
        lines.append(f"| {names} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def rich_escape(text: str) -> str:
    """Help text as Rich markup that shows it as written (square brackets escaped)."""
    from rich.markup import escape

    return escape(text)


def rich_unescape(text: str) -> str:
    """The text `rich_escape` was given (for the README's option tables)."""
    return text.replace("\\[", "[")


def argument(name: str, annotation: Any, help: str) -> inspect.Parameter:
    """A positional CLI argument of a generated command."""
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[annotation, typer.Argument(help=help)]
    )


def out_option(help: str) -> inspect.Parameter:
    """The `--out/-o` option every command that writes a file has."""
    return inspect.Parameter(
        "out",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[Path, typer.Option("--out", "-o", help=help)],
    )


def echo_json(payload: Any) -> None:
    """A command's result on stdout, as indented JSON."""
    typer.echo(json.dumps(payload, indent=2, default=str))
