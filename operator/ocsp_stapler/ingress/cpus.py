"""How many CPUs this process may really use: the default number of ingress workers.

``os.cpu_count()`` is the node's core count. A pod limited to 2 CPUs on a 64-core node that
forks 64 workers gets each of them throttled by the CFS quota (latency spikes every 100 ms
period) and pays 64 times a worker's memory against its limit. So, like Go's automaxprocs and
the JVM's container support, the count is the smallest of: the CPUs the scheduler lets this
process run on (affinity, cpusets), and the CFS quota of its cgroup and every ancestor
(cgroup v2 ``cpu.max``; v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded down (a
1.5-CPU quota runs one worker unthrottled rather than two throttled), and at least 1.
Unreadable or odd cgroup files mean no limit, never an error: this only picks a default.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_cpus"]

_V1_CONTROLLERS = ("cpu,cpuacct", "cpuacct,cpu", "cpu")


def available_cpus(root: Path = Path("/")) -> int:
    """CPUs for worker processes; ``root`` is where /proc and /sys are (tests pass a tree)."""
    counts = [_affinity(), *_quotas(root)]
    return max(1, min(c for c in counts if c is not None))


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _quotas(root: Path) -> list[int]:
    """The whole CPUs each CFS quota on this process's cgroup path allows."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    found: list[int] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2, the unified hierarchy
            for directory in _ancestors(root / "sys/fs/cgroup", path):
                found += _v2_quota(directory / "cpu.max")
        elif "cpu" in controllers.split(","):
            for mount in _V1_CONTROLLERS:
                for directory in _ancestors(root / "sys/fs/cgroup" / mount, path):
                    found += _v1_quota(directory)
    return found


def _ancestors(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and each parent up to the mount (inside a container's cgroup
    namespace the path is "/", and the mount is the container's own cgroup)."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _cpus(quota: int, period: int) -> list[int]:
    return [quota // period] if quota > 0 and period > 0 else []


def _v2_quota(path: Path) -> list[int]:
    try:
        fields = path.read_text().split()
    except (OSError, UnicodeDecodeError):
        return []
    if len(fields) != 2 or fields[0] == "max":
        return []
    try:
        return _cpus(int(fields[0]), int(fields[1]))
    except ValueError:
        return []


def _v1_quota(directory: Path) -> list[int]:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    return _cpus(quota, period)  # -1: no quota
