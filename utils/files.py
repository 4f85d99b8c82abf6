"""Atomic file writes: the project's files go through PATH.tmp and os.replace, never half-written.

Every output file (maps, pictures, CSV/JSON, checkpoints) is written by one of these helpers.
The exceptions are append-only logs (train.log, TensorBoard events), which grow line by line
by design.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], fsync: bool = False) -> Path:
    """Call write(file) on PATH.tmp and rename it to path (creating the folder); return the path.

    fsync=True also flushes the data to disk before the rename (checkpoints: a power cut never
    leaves a renamed but empty file); per-frame outputs skip it, it costs milliseconds a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write data to path atomically (see atomic_write); return the path."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to path atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write data as indented JSON (with a final newline) to path atomically; return the path."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_png(path: str | os.PathLike, image: "np.ndarray") -> Path:
    """Write an 8- or 16-bit grey, BGR or BGRA image as PNG atomically; return the path."""
    import cv2  # here, so that JSON/text writers need no OpenCV

    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    return atomic_write_bytes(path, data.tobytes())
