"""Writing a staple file so that a reader never sees half of it.

A server that reads its staple file at start or reload (HAProxy's ``<crt>.ocsp``, nginx's
``ssl_stapling_file``) may do so at any moment, and nginx refuses to start or reload with an
empty file (measured: tests/operator/test_consumers.py). So the bytes go to a temporary file in
the same directory, are synced, and replace the old file with one ``rename``: a reader sees the
old staple or the new one, whole. The directory is synced too, so a crash right after leaves
one of the two, never none.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ocsp_stapler.consumers.errors import ConsumerError


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step (``ConsumerError`` when it cannot be)."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by a crash of this process id: never ours to keep
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _sync_directory(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConsumerError(f"cannot write {path}: {exc.strerror or exc}") from None


def remove_file(path: Path) -> bool:
    """Remove ``path``; False when it was not there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConsumerError(f"cannot remove {path}: {exc.strerror or exc}") from None
    _sync_directory(path.parent)
    return True


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
