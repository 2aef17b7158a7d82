"""A Secret volume as the kubelet writes it (atomic_writer.go): each version in a new
``..<timestamp>`` directory, ``..data`` pointing at the current one, and one link per key
(``tls.crt -> ..data/tls.crt``). An update swaps ``..data`` with one rename, so a reader
sees a whole version, old or new."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

_versions = itertools.count(1)


def publish(volume: Path, files: dict[str, bytes]) -> None:
    """Make ``files`` the volume's content, exactly as a kubelet update would."""
    volume.mkdir(parents=True, exist_ok=True)
    version = f"..2026_12_03_{next(_versions):06d}"
    (volume / version).mkdir()
    for key, data in files.items():
        (volume / version / key).write_bytes(data)
    data_link = volume / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    tmp = volume / "..data_tmp"
    os.symlink(version, tmp)
    os.replace(tmp, data_link)  # the atomic swap
    for key in files:
        link = volume / key
        if not link.is_symlink():
            os.symlink(f"..data/{key}", link)
    for entry in volume.iterdir():  # keys gone from this version lose their link
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    if old is not None:
        shutil.rmtree(volume / old)
