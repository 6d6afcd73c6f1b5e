"""Optional parts of gscan: a scan needs none of them; a command that does says which extra to install."""

from __future__ import annotations

from importlib import import_module

from .errors import GscanError

DISTRIBUTION = "gscan-forensics"  # the name pip installs gscan by ("gscan" on PyPI is another project)
# what each extra installs: import name -> the distribution pip installs it from (pyproject.toml's
# [project.optional-dependencies])
EXTRAS = {
    "train": {"torch": "torch", "timm": "timm", "safetensors": "safetensors", "onnx": "onnx",
              "sklearn": "scikit-learn", "matplotlib": "matplotlib", "pytorch_grad_cam": "grad-cam"},
    "ray": {"ray": "ray[data]"},
}


def missing_modules(extra: str) -> list[str]:
    """The distributions of the extra whose modules do not import (absent, or broken), by the names pip knows."""
    missing = []
    for module, distribution in EXTRAS[extra].items():
        try:
            import_module(module)
        except ImportError:
            missing.append(distribution)
    return missing


def source_folder() -> str | None:
    """The folder gscan was installed from, when pip recorded one (PEP 610 direct_url.json), else None."""
    import json
    from importlib.metadata import PackageNotFoundError, distribution
    from urllib.parse import unquote, urlparse

    try:
        recorded = distribution(DISTRIBUTION).read_text("direct_url.json")
        url = urlparse(json.loads(recorded or "{}").get("url", ""))
    except (PackageNotFoundError, ValueError, AttributeError):
        return None
    return unquote(url.path) if url.scheme == "file" else None


def install_hint(extra: str) -> str:
    """A pip command that installs an extra and works today: gscan-forensics is not on PyPI, so it names the
    source folder gscan came from, or the checkout as '.'."""
    folder = source_folder()
    if folder:
        return f"pip install '{folder}[{extra}]'"
    return f"pip install '.[{extra}]' (run in the gscan source folder, the one with pyproject.toml)"


def require_extra(extra: str, what: str) -> None:
    """Raise a GscanError (exit 2) naming the extra when any of its modules is not installed."""
    missing = missing_modules(extra)
    if missing:
        raise GscanError(f"{what} needs the {extra} extra (missing: {', '.join(missing)}): {install_hint(extra)}")
