"""The `gscan` console script: the CLI imported inside a guard, so that even a broken install (a module missing
from the wheel, a native library that will not load) exits 3 with one line, never 1 ("fake found") with a
traceback."""

from __future__ import annotations

import sys

from .exit_codes import EXIT_INTERNAL


def run() -> None:
    try:
        from .main import run as main  # relative: the package is cli in a checkout, forensics.cli installed
    except Exception as exc:  # noqa: BLE001 - nothing of gscan is loaded yet to report it otherwise
        sys.stderr.write(f"internal error: gscan could not start: {type(exc).__name__}: {exc} (exit "
                         f"{EXIT_INTERNAL}; reinstall gscan)\n")
        raise SystemExit(EXIT_INTERNAL) from None
    main()
