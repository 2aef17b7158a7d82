"""Feeding nginx a staple file: an include that names it only while it is valid, and a reload.

Measured on Debian's nginx 1.22 (tests/operator/test_consumers.py): nginx reads
``ssl_stapling_file`` at start and reload only, staples what it read past its nextUpdate (even a
response expired when loaded), and fails its configuration test with an empty or missing file,
so a reload is refused and the old staple stays. "No valid staple" therefore cannot be said with
the file: it is said with the configuration. The server block includes a small file this module
writes: ``ssl_stapling on; ssl_stapling_file PATH;`` while a valid staple exists, nothing but a
comment when none does; then nginx is reloaded gracefully (``SIGHUP`` to the master, whose pid
is in its pid file: old workers finish their connections, new ones use the new staple).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ocsp_stapler.consumers.errors import ConsumerError
from ocsp_stapler.consumers.files import write_atomically

MAX_PIDFILE = 64


def stapling_include(staple_file: Path | None) -> str:
    """The include's text: the staple file while there is a valid one, else no stapling."""
    if staple_file is None:
        return "# ocsp-stapler: no valid staple now; nothing is stapled\n"
    name = str(staple_file)
    # Not UTF-8 (a surrogate-escaped byte): nginx could be given it, this text could not.
    readable = name.isprintable() and not any("\udc80" <= c <= "\udcff" for c in name)
    if any(c in name for c in ";{}\"'\\ #$") or not readable:
        shown = os.fsencode(staple_file).decode("utf-8", "replace")
        raise ConsumerError(f"{shown!r}: a path nginx cannot take unquoted")
    return (
        "# ocsp-stapler: rewritten for each new staple\n"
        f"ssl_stapling on;\nssl_stapling_file {staple_file};\n"
    )


def write_include(include: Path, staple_file: Path | None) -> None:
    write_atomically(include, stapling_include(staple_file).encode())


def reload(pidfile: Path) -> int | None:
    """Ask the nginx master named in ``pidfile`` to reload; its pid. None when nginx is not
    running (no pid file, or its process is gone): it reads the include when it starts, so a
    sidecar that starts first is not an error."""
    try:
        with pidfile.open("rb") as handle:
            text = handle.read(MAX_PIDFILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConsumerError(f"cannot read nginx's pid file {pidfile}: {exc.strerror}") from None
    try:
        pid = int(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        pid = 0
    if len(text) > MAX_PIDFILE or pid <= 1:
        raise ConsumerError(f"{pidfile} does not hold a process id")
    if not _is_nginx_master(pid):
        return None  # a stale pid file whose number a process of another program took
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    except OSError as exc:
        raise ConsumerError(
            f"cannot signal nginx (pid {pid} from {pidfile}): {exc.strerror}"
        ) from None
    return pid


def _is_nginx_master(pid: int) -> bool:
    """Whether ``pid`` is an nginx master (it names itself so in its command line): a
    ``SIGHUP`` to another program would end it. Where /proc cannot tell, trust the pid file."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read(256)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return cmdline.startswith(b"nginx: master process")
