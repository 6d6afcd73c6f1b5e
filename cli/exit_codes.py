"""Exit codes, in one place that the console script (cli/entry.py) and the commands both import."""

EXIT_OK = 0
EXIT_FLAGGED = 1  # --fail-on-fake found a fake or an unscored image, or --fail-on-error an error row; nothing else
EXIT_USAGE = 2  # usage or setup errors (GscanError)
EXIT_INTERNAL = 3  # a bug or an unexpected failure, never 1, which CI reads as "fake found"
EXIT_CHANGED = 4  # gscan verify: rows changed, or the report is not whole
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process that SIGPIPE ended: never 1, which means "fake found"
