"""The only exceptions the CLI expects from the library."""


class GscanError(Exception):
    """A problem the user can act on; the CLI prints it and exits with `exit_code`."""

    exit_code = 2


class ModelError(GscanError):
    """A model file or card is missing, unreadable or inconsistent."""


class DeviceError(GscanError):
    """The requested execution device is not available."""


class DataError(GscanError):
    """A training or evaluation folder does not have the expected layout."""


class GscanWarning(UserWarning):
    """Something the user should know that does not stop the job (a model folder skipped); the CLI prints it."""
