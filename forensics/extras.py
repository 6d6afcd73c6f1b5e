"""Optional parts of gscan: a scan needs none of them; a command that does says which extra to install."""

from __future__ import annotations

from importlib import import_module

from .errors import GscanError

# the import names each extra provides (pyproject.toml's [project.optional-dependencies])
EXTRAS = {
    "train": ("torch", "timm", "safetensors", "onnx", "sklearn", "matplotlib", "pytorch_grad_cam"),
    "ray": ("ray",),
}


def missing_modules(extra: str) -> list[str]:
    """The extra's modules that do not import (absent, or broken); the command imports them next anyway."""
    missing = []
    for name in EXTRAS[extra]:
        try:
            import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_extra(extra: str, what: str) -> None:
    """Raise a GscanError (exit 2) naming the extra when any of its modules is not installed."""
    missing = missing_modules(extra)
    if missing:
        raise GscanError(f"{what} needs the {extra} extra (missing: {', '.join(missing)}): "
                         f"pip install 'gscan[{extra}]'")
