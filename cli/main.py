"""The `gscan` command: each command parses options and calls one forensics function.

Exit codes (cli/exit_codes.py): 0 the job ran (even with per-file errors), 1 `--fail-on-fake` and something scored
fake or could not be scored (or `--fail-on-error` and a file could not be scored), 2 usage or setup error, 3 an
unexpected internal error (one line on stderr, the trace in a file), 4 `gscan verify` found a report changed, 130
interrupted, 141 stdout closed early (a broken pipe). One module per command group: scan (dir), verify (verify,
keys), models, training (train, synth, eval, export, quantize, attach, cam; torch imported inside each).
"""

from __future__ import annotations

from .app import app

# each module registers its commands on the app; --help lists them in this order
from . import scan  # noqa: E402,F401,I001
from . import verify  # noqa: E402,F401
from . import models  # noqa: E402,F401
from . import training  # noqa: E402,F401

__all__ = ["app", "run"]


def run() -> None:
    app()
