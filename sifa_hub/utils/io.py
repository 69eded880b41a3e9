"""Atomic file and folder writes: the only way sifa_hub puts anything on disk.

A write goes to a temporary sibling (``.NAME.tmp-*``), is flushed and ``fsync``-ed, gets normal permissions
(files ``0o666 & ~umask``, folders ``0o777 & ~umask``: 0644 / 0755 under the usual umask 022, where
``mkstemp``/``mkdtemp`` would leave 0600 / 0700) and is moved into place with ``os.replace``. A reader sees the
old content or the new one, never a partial file; an interrupted write leaves at most a temporary sibling, which
:func:`remove_stale_temporaries` deletes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "TMP_MARKER",
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "normal_permissions",
    "remove_stale_temporaries",
]

TMP_MARKER = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_permissions(path: str | os.PathLike[str]) -> None:
    """Give ``path`` (recursively, for a folder) the permissions a plain ``open``/``mkdir`` would have given."""
    mask = _umask()
    path = os.fspath(path)
    if os.path.isdir(path):
        os.chmod(path, 0o777 & ~mask)
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                os.chmod(os.path.join(root, f), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened and synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary file path next to ``path``; on success it replaces ``path``, on error it is removed.

    For writers that want a file name (``safetensors.torch.save_file``, ``matplotlib``'s ``savefig``, PyAV).
    The temporary name keeps ``path``'s suffix, so format detection by extension still works.
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}{TMP_MARKER}", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        normal_permissions(tmp)
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, replace: Callable[[str], bool] | None = None) -> Iterator[str]:
    """Yield an empty temporary folder next to ``path``; on success it becomes ``path``.

    Args:
        path: the folder to create or replace.
        replace: called with ``path`` when it already exists; it must return ``True`` to allow replacing it
            (e.g. "it holds only files we wrote"). Without it an existing ``path`` is refused. Raising inside it
            is the way to give a specific message.

    The old folder is first renamed to a hidden ``.NAME.old-*`` sibling, the new one renamed into place, then
    the old one deleted: a crash between the two renames leaves the old folder recoverable, and the next
    :func:`remove_stale_temporaries` (called here first) puts it back.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(path)
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise FileExistsError(f"{path} exists and is not a folder")
        if replace is None or not replace(path):
            raise FileExistsError(f"{path} already exists; refusing to replace it")
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}{TMP_MARKER}")
    try:
        yield tmp
        normal_permissions(tmp)
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.old-")
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[str]:
    """Clean up after interrupted writes of ``path``: delete its ``.NAME.tmp-*`` siblings and, when ``path``
    itself is missing, restore the newest ``.NAME.old-*`` backup (a crash between :func:`atomic_dir`'s renames).

    Returns the paths removed or restored.
    """
    path = Path(os.path.abspath(os.fspath(path)))
    parent, name = path.parent, path.name
    if not parent.is_dir():
        return []
    touched: list[str] = []
    olds = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not os.path.lexists(path):
        os.replace(olds.pop(), path)
        touched.append(str(path))
    for stale in [*parent.glob(f".{name}{TMP_MARKER}*"), *olds]:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        touched.append(str(stale))
    return touched
