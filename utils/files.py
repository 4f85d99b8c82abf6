"""Atomic file writes, and the two rules of every output: never onto an input or an existing file, one run a folder.

Every output file (maps, pictures, CSV/JSON, checkpoints) is written by one of these helpers.
The exceptions are append-only logs (train.log, TensorBoard events), which grow line by line
by design.

- ``check_output``: a command refuses (one line, before any work) to write onto one of its own inputs, into a
  folder it reads, or onto an existing file unless --overwrite; every command that writes a file calls it.
- ``locked_folder``: an output folder is locked for the length of a run (``OUT/.lock``, an flock the OS releases
  when the process dies), so a second run into it is refused at once and a killed run's lock is taken over.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator

try:
    import fcntl  # POSIX; absent on Windows, where output folders are not locked
except ImportError:  # pragma: no cover
    fcntl = None

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


log = logging.getLogger(__name__)
LOCK_NAME = ".lock"  # OUT/.lock: held (flock) by the run writing OUT, holds its pid; removed when the run ends


class OutputError(ValueError):
    """An output that would replace an input or an existing file, or a folder another run is writing; the message
    names the path and the fix."""


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Return True when a and b name one file or folder (links and hard links followed; either may not exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Return True when path is folder or lies (at any depth) inside it, links resolved."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def check_output(path: str | os.PathLike, overwrite: bool = False, inputs: Iterable[tuple[str, Any]] = (),
                 folders: Iterable[tuple[str, Any]] = (), option: str = "--out", label: str | None = None) -> Path:
    """Return path when a command may write the file there; OutputError (one line naming it and the fix) when not.

    Refused always: path is one of ``inputs`` ((what, file) pairs: the command's own input files, even with
    overwrite), lies inside one of ``folders`` ((what, folder) pairs: folders the command reads as a whole), or is a
    folder. Refused without ``overwrite``: an existing file (one this run did not create). Call it before any work.
    The message names the file as ``label`` (default "OPTION PATH"; e.g. "PATH (in --out)" for a file in a folder).
    """
    path = Path(path)
    label = label or f"{option} {path}"
    for what, item in inputs:
        if item is not None and same_path(path, item):
            raise OutputError(f"{label} is this command's input ({what} {item}): writing there would destroy "
                              f"it; pass another {option} (nothing was written)")
    for what, folder in folders:
        if folder is not None and is_within(path, folder):
            raise OutputError(f"{label} lies in {folder}, which this command reads ({what}): pass {option} "
                              "outside it (nothing was written)")
    if path.is_dir():
        raise OutputError(f"{label} is a folder: pass a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{label} already exists: pass --overwrite to replace it, or another {option} "
                          "(nothing was written)")
    return path


def _read_pid(fd: int) -> str:
    """Return the text of an open lock file (the pid of the run that holds or held it), '' when empty."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 64).decode("ascii", "replace").strip()


@contextlib.contextmanager
def locked_folder(folder: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """Hold FOLDER/.lock for the block (creating folder when absent); yield the folder.

    A second process locking the same folder is refused at once (OutputError naming the pid that holds it). The
    lock is an flock, which the OS releases when its process dies: the .lock of a killed run is taken over (noted
    in the log). On leaving, the lock file is removed, and so is the folder when this call created it and it is
    empty (a run refused before writing anything leaves nothing). OSError when the folder cannot be written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(20, "not a folder", str(folder))
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd, held = None, False
    try:
        while fcntl is not None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd) or "unknown"
                raise OutputError(f"{option} {folder} is being written by another run (pid {holder}): wait for it to "
                                  f"end, or pass another {option} (nothing was written)") from None
            try:  # the holder may have removed the file between our open and flock: lock the one at the path
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
            fd = None
        held = fd is not None
        if held:
            stale = _read_pid(fd)
            if stale and stale != str(os.getpid()):
                log.info("%s: took over the lock of a stopped run (pid %s)", folder, stale)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield folder
    finally:
        if held:
            path.unlink(missing_ok=True)  # while still held: no other run can have locked this file
        if fd is not None:
            os.close(fd)  # (refused: the other run's lock file stays as it is)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
