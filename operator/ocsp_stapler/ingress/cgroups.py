"""What the pod's cgroup lets the ingress use: the default number of workers.

``os.cpu_count()`` is the node's core count. A pod limited to 2 CPUs on a 64-core node that
forks 64 workers gets each of them throttled by the CFS quota (latency spikes every 100 ms
period) and pays 64 times a worker's memory against its limit. So, like Go's automaxprocs and
the JVM's container support, the count is the smallest of: the CPUs the scheduler lets this
process run on (affinity, cpusets), and the CFS quota of its cgroup and every ancestor
(cgroup v2 ``cpu.max``; v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded down (a
1.5-CPU quota runs one worker unthrottled rather than two throttled), and at least 1.

A pod without a CPU limit (the chart's default: CPU limits throttle more than they protect)
would still run one worker per node core; each costs memory against the pod's *memory*
limit, and a pod that forks more workers than that limit holds is OOM-killed in a loop. So
the count is also capped by the memory limit (v2 ``memory.max``, v1
``memory.limit_in_bytes``, the smallest up the tree): the supervisor's budget plus one
worker's budget each, from the figures ``make bench`` measures (bench/results.md, "Ingress
memory"). Unreadable or odd cgroup files mean no limit, never an error: this only picks a
default.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_cpus", "default_workers", "memory_limit"]

_V1_CONTROLLERS = ("cpu,cpuacct", "cpuacct,cpu", "cpu")
_NO_LIMIT = 1 << 60  # cgroup v1 says "no limit" with a number near 2**63
SUPERVISOR_BUDGET = 160 << 20
"""The supervisor's memory (informers, snapshots of every certificate) with headroom."""
WORKER_BUDGET = 96 << 20
"""One worker's memory with headroom for its connections (bench/results.md)."""


def default_workers(root: Path = Path("/")) -> int:
    """The ingress's worker count when none is given: its CPUs, capped by its memory limit."""
    workers = available_cpus(root)
    limit = memory_limit(root)
    if limit is not None:
        workers = min(workers, (limit - SUPERVISOR_BUDGET) // WORKER_BUDGET)
    return max(1, workers)


def memory_limit(root: Path = Path("/")) -> int | None:
    """The smallest memory limit (bytes) on this process's cgroup path; None: none."""
    limits: list[int] = []
    for version, directory in _cgroup_directories(root, "memory"):
        name = "memory.max" if version == 2 else "memory.limit_in_bytes"
        limits += _number(directory / name)
    limits = [n for n in limits if 0 < n < _NO_LIMIT]
    return min(limits) if limits else None


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
    found: list[int] = []
    for version, directory in _cgroup_directories(root, "cpu"):
        found += _v2_quota(directory / "cpu.max") if version == 2 else _v1_quota(directory)
    return found


def _cgroup_directories(root: Path, controller: str) -> list[tuple[int, Path]]:
    """(cgroup version, directory) of this process's cgroup and each ancestor, for one
    controller: the unified (v2) hierarchy and the v1 hierarchy that mounts it."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    mounts = _V1_CONTROLLERS if controller == "cpu" else (controller,)
    found: list[tuple[int, Path]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2, the unified hierarchy
            found += [(2, d) for d in _ancestors(root / "sys/fs/cgroup", path)]
        elif controller in controllers.split(","):
            for mount in mounts:
                found += [(1, d) for d in _ancestors(root / "sys/fs/cgroup" / mount, path)]
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


def _number(path: Path) -> list[int]:
    """The one integer a cgroup file holds ("max" and odd contents: none)."""
    try:
        return [int(path.read_text().strip())]
    except (OSError, UnicodeDecodeError, ValueError):
        return []


def _v1_quota(directory: Path) -> list[int]:
    quota, period = (
        _number(directory / "cpu.cfs_quota_us"),
        _number(directory / "cpu.cfs_period_us"),
    )
    return _cpus(quota[0], period[0]) if quota and period else []  # quota -1: none
