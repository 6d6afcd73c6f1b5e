"""The `gscan` Typer app and what every command shares: the consoles, the one place a GscanError becomes a
message and exit 2 and an unexpected exception one line and exit 3, plain Unix-style help."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from forensics import __version__
from forensics.errors import GscanError, GscanWarning
from forensics.extras import require_extra
from forensics.text import visible

from .exit_codes import EXIT_BROKEN_PIPE, EXIT_INTERNAL

FLAG = " "  # the metavar of an on/off flag: no "<bool>" beside it in --help


def _quiet_broken_pipe() -> typer.Exit:
    """stdout's reader went away (`gscan dir x | head`): no traceback, and nothing more written to it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return typer.Exit(EXIT_BROKEN_PIPE)


class GscanConsole(Console):
    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise _quiet_broken_pipe()  # rich's own handler exits 1


_python_showwarning = warnings.showwarning
out = GscanConsole()
err = GscanConsole(stderr=True)


def _save_trace() -> str:
    """The current exception's full trace in a file of its own (the user log folder, else the temporary folder);
    where it went, or why it could not be kept."""
    import tempfile
    import traceback
    from datetime import datetime, timezone

    text = traceback.format_exc()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    folders = [Path(os.environ["GSCAN_LOG_DIR"])] if os.environ.get("GSCAN_LOG_DIR") else []
    try:
        from platformdirs import user_log_path

        folders.append(user_log_path("gscan"))
    except Exception:
        pass
    folders.append(Path(tempfile.gettempdir()))
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=folder, prefix=f"gscan-crash-{stamp}-", suffix=".txt")
            with os.fdopen(fd, "w") as fh:
                fh.write(f"gscan {__version__}\n{' '.join(sys.argv)}\n\n{text}")
            return name
        except OSError:
            continue
    return "nowhere (no folder could be written)"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings (GscanWarning) as one line on stderr; others as Python shows them."""
    if issubclass(category, GscanWarning):
        err.print(f"[yellow]warning:[/] {escape(visible(str(message)))}", highlight=False, soft_wrap=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def _metavar(param) -> str:
    """PATH, N, X, TEXT or [a|b], from the parameter's annotation (a list's element type)."""
    from enum import Enum
    from typing import get_args

    annotation = param.type_descriptor.annotation
    if getattr(param.type_descriptor, "is_list", False) and get_args(annotation):
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "[" + "|".join(str(c.value) for c in annotation) + "]"
    return {int: "N", float: "X", Path: "PATH", str: "TEXT"}.get(annotation, "VALUE")


def _plain_metavars(command) -> None:
    """Help in the words of the usual Unix tool (PATH, N, [a|b]), never Typer's `{path}`, `<int range>`,
    `<list[Path]>` or `-h <bool>`: each parameter's type label is replaced on the instance."""
    for param in command.params:
        if getattr(param, "is_flag", False) or not hasattr(param, "type_descriptor"):
            continue
        shown = param.metavar or _metavar(param)
        if param.param_type_name == "argument":
            shown = (param.metavar or param.name.upper()) + ("..." if param.nargs == -1 else "")
            param._usage_display_name = lambda shown=shown: shown
            param._rich_display_name = lambda shown=shown: shown
            param.display_type_rich = param.display_type = lambda ctx=None, **kw: ""
        else:
            param.display_type_rich = param.display_type = lambda ctx=None, shown=shown, **kw: shown


def _plain_choice_message(message: str) -> str:
    """A mistyped choice in plain words: no validator's "Value error," prefix, and the likely meaning of the usual
    slip (`--device gpu` is `--device cuda`)."""
    message = message.removeprefix("Value error, ")
    if message.startswith("'gpu' is not one of"):
        message += " (for a GPU, --device cuda)"
    return message


class GscanGroup(TyperGroup):
    """The one place a GscanError becomes a message and exit 2, and an unexpected exception one line and exit 3."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _plain_metavars(command)
        return command

    def invoke(self, ctx):
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except GscanError as exc:
            err.print(f"[bold red]error:[/] {escape(visible(str(exc)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            raise _quiet_broken_pipe() from None
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("click", "typer"):  # usage errors and exits: theirs to report
                if type(exc).__name__ == "BadParameter" and isinstance(getattr(exc, "message", None), str):
                    exc.message = _plain_choice_message(exc.message)
                raise
            where = _save_trace()
            err.print(escape(visible(f"internal error: {type(exc).__name__}: {exc} (exit {EXIT_INTERNAL}; the full "
                                     f"trace is in {where})")), highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None


app = typer.Typer(
    name="gscan",
    cls=GscanGroup,
    help="Find GAN-generated images: scan folders with exported detectors, train and export your own.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"gscan {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", "-V", metavar=FLAG, callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """gscan: GAN fingerprint scanner."""


def _probability(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:  # also catches nan, which no comparison admits
        raise typer.BadParameter(f"must be a number from 0 to 1, not {value}")
    return value


def _train_side(what: str) -> None:
    require_extra("train", what)
