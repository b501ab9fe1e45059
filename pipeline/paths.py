"""Where newsdrift finds its shipped config and keeps its default database."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import platformdirs


def shipped_config_dir() -> Path:
    """The `config/` shipped with the project.

    An installed wheel carries it as ``pipeline/_config``; a source checkout
    (or an editable install) has it at the repository root.
    """
    packaged = Path(str(resources.files("pipeline"))) / "_config"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "config"


def default_db_url() -> str:
    data = Path(platformdirs.user_data_dir("newsdrift", appauthor=False))
    return f"sqlite:///{data / 'newsdrift.db'}"


def own_folder(config_dir: Path | None, folder: str) -> Path | None:
    """``config_dir`` when it has its own ``folder`` (``lexicons``, ``topic``), which then
    replaces the shipped one; None (the shipped one) otherwise."""
    return config_dir if config_dir is not None and (config_dir / folder).is_dir() else None
