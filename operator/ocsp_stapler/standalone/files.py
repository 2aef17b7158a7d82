"""Reading the small files the standalone staplers are pointed at, as untrusted input.

A path given on the command line, or a key in a Secret volume, may turn out to be a FIFO (a
read would block the loop for good), a directory, a device, or a file far larger than any
certificate or staple: each is a ``ChainInvalid`` naming the file, not a hang or a traceback.
Opened without blocking and checked to be a regular file before a single bounded read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ocsp_stapler.ocsp import errors

MAX_FILE = 1024 * 1024
"""No certificate bundle or staple is this large (a whole Secret is at most 1 MiB)."""


def read_small_file(path: Path | None, limit: int = MAX_FILE) -> bytes | None:
    """The file's bytes; None when there is no such file (or no path)."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise errors.ChainInvalid(f"cannot read {_shown(path)}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise errors.ChainInvalid(f"{_shown(path)} is not a regular file")
        data = os.read(fd, limit + 1)
    except OSError as exc:
        raise errors.ChainInvalid(f"cannot read {_shown(path)}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise errors.ChainInvalid(f"{_shown(path)} is larger than {limit} bytes")
    return data


def _shown(path: Path) -> str:
    """The path as printable text (a file name may hold any byte but NUL and /)."""
    text = os.fsencode(path).decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)
