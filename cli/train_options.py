"""`gscan train`'s options, built from the declarations in forensics.training.config (help, panel, metavar), so
a new training setting is written once, in TrainConfig or Augment."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from forensics.errors import GscanError
from forensics.training.config import DATA, Augment, TrainConfig

FLAG = " "  # the metavar of an on/off flag: no "<bool>" beside it in --help
QUALITY = tuple[int, int]
FACTORS = tuple[float, float]  # a range of factors (--launder-scale 0.25-0.75)


def _declared() -> list[tuple[type, dataclasses.Field, Any]]:
    """(owner, field, resolved type) of every field the CLI shows, TrainConfig's then Augment's."""
    out = []
    for owner in (TrainConfig, Augment):
        hints = typing.get_type_hints(owner)
        out += [(owner, f, hints[f.name]) for f in dataclasses.fields(owner) if f.metadata.get("help")]
    return out


def _cli_type(kind: Any, default: Any) -> tuple[Any, Any]:
    """The annotation and default a declared field gets on the command line."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if kind in (QUALITY, Optional[QUALITY], FACTORS):  # a range is typed as LOW-HIGH
        return Optional[str], None if default is None else f"{default[0]:g}-{default[1]:g}"
    if typing.get_origin(kind) is tuple:  # repeatable
        return Optional[list[args[0]]], None
    if len(args) == 1 and type(None) in typing.get_args(kind):
        return Optional[args[0]], default
    return kind, default


def train_parameters() -> list[inspect.Parameter]:
    params = []
    for _, f, kind in _declared():
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        annotation, cli_default = _cli_type(kind, default)
        names = [meta["flag"] or "--" + f.name.replace("_", "-")]
        extra = {"metavar": FLAG} if kind is bool else ({"metavar": meta["metavar"]} if meta["metavar"] else {})
        option = typer.Option(*names, help=meta["help"], rich_help_panel=meta["panel"], **extra)
        if f.name == "out":
            annotation, cli_default = Path, inspect.Parameter.empty  # required
            option = typer.Option("--out", "-o", help=meta["help"], rich_help_panel=meta["panel"], metavar="DIR")
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=cli_default,
                                        annotation=Annotated[annotation, option]))
    return params


def quality_range(text: str | None, option: str) -> tuple[int, int] | None:
    """LOW-HIGH as a pair of JPEG qualities; None when the option was not given."""
    if text is None:
        return None
    low, _, high = text.partition("-")
    try:
        q = (int(low), int(high or low))
    except ValueError:
        raise GscanError(f"{option} must look like 60-95, not {text!r}") from None
    if not 1 <= q[0] <= q[1] <= 100:
        raise GscanError(f"{option} must lie within 1-100, low first, not {text!r}")
    return q


def factor_range(text: str, option: str) -> tuple[float, float]:
    """LOW-HIGH as a pair of factors in (0, 1], low first."""
    low, _, high = str(text).partition("-")
    try:
        pair = (float(low), float(high or low))
    except ValueError:
        raise GscanError(f"{option} must look like 0.25-0.75, not {text!r}") from None
    if not 0 < pair[0] <= pair[1] <= 1:
        raise GscanError(f"{option} must lie within 0-1, low first, not {text!r}")
    return pair


def config_from_options(data_dirs: list[Path], val: list[Path] | None, options: dict[str, Any]) -> TrainConfig:
    """The TrainConfig the parsed options describe."""
    values: dict[type, dict[str, Any]] = {TrainConfig: {}, Augment: {}}
    for owner, f, kind in _declared():
        value = options[f.name]
        if kind in (QUALITY, Optional[QUALITY]):
            value = quality_range(value, "--" + f.name.replace("_", "-"))
        elif kind == FACTORS:
            value = factor_range(value, "--" + f.name.replace("_", "-"))
        elif typing.get_origin(kind) is tuple:
            value = tuple(value or ())
        elif isinstance(value, Enum):
            value = value.value
        values[owner][f.name] = value
    val = val or []
    return TrainConfig(data_dir=data_dirs[0], more_data=tuple(data_dirs[1:]), val_dir=val[0] if val else None,
                       more_val=tuple(val[1:]), augment=Augment(**values[Augment]), **values[TrainConfig])


def with_train_options(command: Callable) -> Callable:
    """Give command(data_dirs, val, **options) the declared options as its signature (what Typer reads)."""
    fixed = [
        inspect.Parameter("data_dirs", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[
            list[Path], typer.Argument(metavar="DATA_DIR", help="Folder(s) per class (binary: real/ and fake "
                                                                "folders); several are trained on together.")]),
        inspect.Parameter("val", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[list[Path]], typer.Option(metavar="DIR", rich_help_panel=DATA,
                                               help="Validation folder, repeatable; default: 20% of images, split "
                                                    "by image.")]),
    ]
    params = fixed + train_parameters()
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command
