"""Atomic file writes: a temporary file in the target's folder, then a rename.

A reader sees either the old file or the complete new one, never half of it,
even if the writer crashes midway.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> str:
    """Calls `write(file)` on a temporary binary file, then renames it to `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}-")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def write_json(path: str | os.PathLike, payload: Any) -> str:
    """Writes `payload` as indented JSON, atomically."""
    return write_atomically(path, lambda f: f.write(json.dumps(payload, indent=1).encode()))


def write_text(path: str | os.PathLike, text: str) -> str:
    """Writes `text` as UTF-8, atomically."""
    return write_atomically(path, lambda f: f.write(text.encode()))


def write_results(
    folder: str | os.PathLike, name: str, results: Any, markdown: Callable[[Any], str]
) -> str:
    """Writes a benchmark's pair of outputs, atomically: `results` as `folder/name.json`
    and `markdown(results)` as `folder/name.md` (the folder is made if missing).
    Returns the Markdown text."""
    write_json(os.path.join(folder, f"{name}.json"), results)
    text = markdown(results)
    write_text(os.path.join(folder, f"{name}.md"), text)
    return text
