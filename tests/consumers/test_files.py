"""A staple file is replaced whole: a reader (a server reloading) sees the old bytes or the new,
never a part, an empty file, or none; a file that cannot be written is a ``ConsumerError``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ocsp_stapler.consumers.errors import ConsumerError
from ocsp_stapler.consumers.files import remove_file, write_atomically


def test_a_reader_never_sees_a_partial_or_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "site.pem.ocsp"
    versions = [bytes([n]) * 256 * 1024 for n in range(1, 5)]
    write_atomically(path, versions[0])
    stop = threading.Event()
    seen: set[bytes] = set()
    torn: list[int] = []

    def read() -> None:
        while not stop.is_set():
            data = path.read_bytes()  # raises if the file is ever missing
            if data not in versions:
                torn.append(len(data))
            seen.add(data[:1])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(200):  # bounded
            write_atomically(path, versions[round_ % len(versions)])
    finally:
        stop.set()
        reader.join(timeout=30)
    assert torn == []
    assert len(seen) > 1  # the reader did see the file change
    assert [p.name for p in tmp_path.iterdir()] == ["site.pem.ocsp"]  # no temporary left


def test_the_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "staple.der"
    write_atomically(path, b"\x30\x00", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == b"\x30\x00"


def test_writing_where_a_directory_stands_is_a_consumer_error_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "staple.der").mkdir()
    with pytest.raises(ConsumerError, match="cannot write"):
        write_atomically(tmp_path / "staple.der", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["staple.der"]


def test_a_missing_parent_is_a_consumer_error(tmp_path: Path) -> None:
    with pytest.raises(ConsumerError, match="cannot write"):
        write_atomically(tmp_path / "absent" / "staple.der", b"x")


def test_remove_says_whether_there_was_a_file(tmp_path: Path) -> None:
    path = tmp_path / "staple.der"
    write_atomically(path, b"x")
    assert remove_file(path) is True
    assert remove_file(path) is False
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConsumerError, match="cannot remove"):
        remove_file(tmp_path / "dir")
