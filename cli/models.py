"""`gscan models`: the shipped models and the user's, with their cards' key figures."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import FLAG, app, out


@app.command("models")
def models_command(
    as_json: Annotated[bool, typer.Option("--json", metavar=FLAG, help=(
        "Print the cards as JSON (one list) instead: long arrays summarised, training paths shortened."))] = False,
    full: Annotated[bool, typer.Option("--full", metavar=FLAG, help="With --json: every card whole.")] = False,
) -> None:
    """List the shipped models and yours, with their cards' key figures."""
    from forensics.runtime import list_models

    from .progress import print_models, print_models_json

    if as_json:
        print_models_json(out, list_models(), full=full)
    else:
        print_models(out, list_models())
