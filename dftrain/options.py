"""Typed options: each option is defined once, as a field of a pydantic model, and that one definition
serves the command line (the Typer options are generated from it), YAML config files and experiment files.

    class TrainConfig(Options):
        lr: Number = option(5e-6, "Peak learning rate.", gt=0)

gives `--lr FLOAT` with "Peak learning rate. (default: 5e-06)" as help, reads `lr: 1e-3` from YAML as a
number (YAML 1.1 reads it as a string), and refuses `lr: ten`, `--lr nan` and `--lr 0` with one line each,
before anything loads. Cross-field checks (files that must exist, options that exclude each other) stay in
the stage's own `validate`.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError

from dftrain.errors import ConfigError


def _no_bool(value: Any) -> Any:
    # pydantic reads True as 1 for numbers; `micro_batch_size: true` is a mistake, not a number.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


Integer = Annotated[int, BeforeValidator(_no_bool)]
Number = Annotated[float, BeforeValidator(_no_bool)]  # finite: NaN and inf are refused (model config)
Switch = Annotated[bool, Strict()]  # true / false only: `word_repeat: 2` is refused, not read as True


def _path_text(value: Any) -> Any:
    # A library caller's pathlib.Path is the same option as its text.
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _one_or_many(value: Any) -> Any:
    # `shards: folder` in YAML (or a caller's single path) is a list of one.
    value = _path_text(value)
    if isinstance(value, str):
        return [value]
    return [_path_text(v) for v in value] if isinstance(value, list | tuple) else value


PathText = Annotated[str, BeforeValidator(_path_text)]  # a file or folder, given as text or a Path
PathList = Annotated[list[str], BeforeValidator(_one_or_many)]  # a repeatable option (`--shards A --shards B`)


class Options(BaseModel):
    """Base of every stage's option model: unknown keys, NaN and inf are errors; numbers given as text
    (YAML's `1e-3`, an environment value) are read as numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True,
                              validate_assignment=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def option(default: Any, help: str, *, flags: tuple[str, ...] = (), hidden: bool = False, cli: bool = True,
           default_text: str | None = None, metavar: str | None = None, **constraints: Any) -> Any:
    """A field with its command-line help. `default_text` replaces the shown default where the value is
    worked out later (None = "from the model"); `cli=False` keeps a field out of the command line;
    `metavar` names the value in --help (default: its type)."""
    extra = {"flags": flags, "hidden": hidden, "cli": cli, "default_text": default_text, "metavar": metavar}
    if isinstance(default, dict | list):
        return Field(default_factory=lambda: type(default)(default), description=help, json_schema_extra=extra,
                     **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def option_names(model: type[Options]) -> set[str]:
    return set(model.model_fields)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def missing_required(options: Options) -> list[str]:
    """`--x is required` for every field declared required (default_text="required") that is still empty."""
    return [f"{flag_name(name)} is required" for name, field in type(options).model_fields.items()
            if (field.json_schema_extra or {}).get("default_text") == "required" and not getattr(options, name)]


# --- values from files and flags ---------------------------------------------------------------------------

def read_yaml_mapping(path: str | os.PathLike, *, kind: str, holds: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (a run config, an experiment file); one-line errors naming it."""
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {holds}")
    return data


def normalise_keys(values: dict[str, Any], model: type[Options], source: str) -> dict[str, Any]:
    """Keys as field names (dashes or underscores); an unknown key is a one-line error naming the source."""
    names, out = option_names(model), {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise ConfigError(f"{source}: unknown option {key!r}")
        out[name] = value
    return out


def describe_errors(exc: ValidationError, *, as_flags: bool) -> list[str]:
    """pydantic's errors as `--steps: Input should be ..., got 'ten'` (or `steps: ...` for file keys)."""
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "value"
        label = flag_name(name) if as_flags else name
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{label}: {message}, got {error['input']!r}")
    return lines


def build_options(model: type[Options], layers: list[tuple[str, dict[str, Any]]]) -> Options:
    """Defaults < each layer in order (a YAML file, then flags). Each layer is checked on its own first, so
    a bad value is reported against the file or the flag it came from; all problems in one line."""
    merged: dict[str, Any] = {}
    for source, values in layers:
        values = normalise_keys(values, model, source)
        try:
            model.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(describe_errors(exc, as_flags=source == "flags"))
            raise ConfigError(problems if source == "flags" else f"{source}: {problems}") from None
        merged.update(values)
    return model.model_validate(merged)


def check_values(model: type[Options], values: dict[str, Any], where: str) -> list[str]:
    """Problems of a partial set of options (an experiment file's section), without building the model."""
    try:
        values = normalise_keys(values, model, where)
    except ConfigError as exc:
        return [str(exc)]
    try:
        model.model_validate(values)
    except ValidationError as exc:
        return [f"{where}.{line}" for line in describe_errors(exc, as_flags=False)]
    return []


# --- the command line ----------------------------------------------------------------------------------------

def _plain_type(annotation: Any) -> tuple[type, tuple | None]:
    """(click-level type, Literal choices or None) of a field's annotation; `X | None` read as X."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices
    return annotation, None


def help_text(name: str, model: type[Options]) -> str:
    """The help of one option: its description, the choices and the default, each said once."""
    field = model.model_fields[name]
    extra = field.json_schema_extra or {}
    plain, choices = _plain_type(field.annotation)
    parts = [field.description or ""]
    if choices:
        parts.append("One of: " + " | ".join(str(c) for c in choices) + ".")
    shown = extra.get("default_text")
    if shown is None and field.default is not None and not field.default_factory:
        shown = "on" if field.default is True else "off" if field.default is False else str(field.default)
    if shown == "required":
        parts.append("(required)")
    elif shown:
        parts.append(f"(default: {shown})")
    return " ".join(p for p in parts if p)


def cli_parameters(model: type[Options]) -> list[inspect.Parameter]:
    """One Typer option per command-line field. Every default is None ("not given"), so that a YAML value
    is only overridden by a flag the user typed."""
    import typer

    params = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra or {}
        if not extra.get("cli", True):
            continue
        plain, _ = _plain_type(field.annotation)
        decls = extra.get("flags") or ()
        if plain is bool and not decls:
            decls = (f"{flag_name(name)}/--no-{name.replace('_', '-')}",)
        elif not decls:
            decls = (flag_name(name),)
        info = typer.Option(None, *decls, help=help_text(name, model), hidden=extra.get("hidden", False),
                            show_default=False, metavar=extra.get("metavar"))
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                        annotation=plain | None))
    return params


def options_command(model: type[Options], *, extra: list[inspect.Parameter] = ()) -> Callable:
    """Decorator: `run(given, **extra)` becomes a Typer command whose options are the model's fields plus
    `extra` (e.g. --config); `given` holds only the options the user typed."""

    def wrap(run: Callable) -> Callable:
        names = option_names(model)

        def command(**kwargs: Any) -> Any:
            given = {k: v for k, v in kwargs.items() if k in names and v is not None}
            return run(given, **{k: v for k, v in kwargs.items() if k not in names})

        params = [*extra, *cli_parameters(model)]
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__doc__ = run.__doc__
        command.__name__ = run.__name__
        return command

    return wrap
