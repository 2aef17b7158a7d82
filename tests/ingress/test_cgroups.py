"""The default worker count follows the pod's CPU limit, not the node's cores, and fits in
its memory limit: cgroup trees laid out as the kernel shows them (v2 unified, v1 per
controller, nested limits, a container's cgroup namespace), and files that are missing or odd
(no limit, never an error)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocsp_stapler.ingress.cgroups import (
    SUPERVISOR_BUDGET,
    WORKER_BUDGET,
    available_cpus,
    default_workers,
    memory_limit,
)  # fmt: skip

CORES = len(os.sched_getaffinity(0))


def _tree(tmp_path: Path, cgroup: str, files: dict[str, str]) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


V2_POD = "0::/kubepods/burstable/pod1/ctr\n"
CASES = {
    # A container's cgroup namespace: its own cgroup is the mount's root.
    "v2-namespaced-1-cpu": ("0::/\n", {"cpu.max": "100000 100000\n"}, 1),
    "v2-half-cpu-is-one-worker": ("0::/\n", {"cpu.max": "50000 100000\n"}, 1),
    "v2-1.5-cpus-rounds-down": ("0::/\n", {"cpu.max": "150000 100000\n"}, 1),
    "v2-no-limit": ("0::/\n", {"cpu.max": "max 100000\n"}, CORES),
    "v2-the-pod-limit-above-an-unlimited-container": (
        V2_POD,
        {
            "kubepods/burstable/pod1/ctr/cpu.max": "max 100000\n",
            "kubepods/burstable/pod1/cpu.max": "100000 100000\n",
        },
        1,
    ),
    "v1-quota": (
        "4:memory:/x\n2:cpu,cpuacct:/kubepods/pod1\n",
        {
            "cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "100000\n",
            "cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000\n",
        },
        1,
    ),
    "v1-no-quota": (
        "1:cpu:/\n",
        {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
        CORES,
    ),
    "odd-files-are-no-limit": (
        "0::/\nnonsense\n",
        {"cpu.max": "lots 0\n"},
        CORES,
    ),
    "zero-period-is-no-limit": ("0::/\n", {"cpu.max": "100000 0\n"}, CORES),
    "missing-cpu-max": ("0::/\n", {}, CORES),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_cpu_quota_bounds_the_workers(
    case: tuple[str, dict[str, str], int], tmp_path: Path
) -> None:
    cgroup, files, expected = case
    assert available_cpus(_tree(tmp_path, cgroup, files)) == expected


def test_a_quota_above_the_cpus_available_is_capped_by_them(tmp_path: Path) -> None:
    root = _tree(tmp_path, "0::/\n", {"cpu.max": f"{(CORES + 8) * 100000} 100000\n"})
    assert available_cpus(root) == CORES


def test_no_proc_at_all(tmp_path: Path) -> None:
    assert available_cpus(tmp_path) == CORES


MIB = 1 << 20
MEMORY_CASES = {
    "v2-namespaced": ("0::/\n", {"memory.max": f"{512 * MIB}\n"}, 512 * MIB),
    "v2-max-is-none": ("0::/\n", {"memory.max": "max\n"}, None),
    "v2-the-pod-limit-below-the-container's": (
        V2_POD,
        {
            "kubepods/burstable/pod1/ctr/memory.max": f"{1024 * MIB}\n",
            "kubepods/burstable/pod1/memory.max": f"{300 * MIB}\n",
        },
        300 * MIB,
    ),
    "v1": ("5:memory:/kubepods/pod1\n", {"memory/kubepods/pod1/memory.limit_in_bytes": "268435456\n"}, 256 * MIB),
    "v1-unlimited": ("5:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),
    "odd": ("0::/\n", {"memory.max": "a lot\n"}, None),
    "missing": ("0::/\n", {}, None),
}  # fmt: skip


@pytest.mark.parametrize("case", MEMORY_CASES.values(), ids=MEMORY_CASES.keys())
def test_the_memory_limit_is_the_smallest_on_the_path(
    case: tuple[str, dict[str, str], int | None], tmp_path: Path
) -> None:
    cgroup, files, expected = case
    assert memory_limit(_tree(tmp_path, cgroup, files)) == expected


def test_without_a_cpu_limit_the_memory_limit_caps_the_workers(tmp_path: Path) -> None:
    """No CPU limit on a many-core node: as many workers as the memory limit holds, so the
    pod is not OOM-killed at start; at least one."""
    for workers in range(1, 5):
        limit = SUPERVISOR_BUDGET + workers * WORKER_BUDGET + WORKER_BUDGET // 2
        root = tmp_path / str(workers)
        _tree(root, "0::/\n", {"cpu.max": "max 100000\n", "memory.max": f"{limit}\n"})
        assert default_workers(root) == min(workers, CORES)
    tiny = _tree(tmp_path / "tiny", "0::/\n", {"memory.max": f"{64 * MIB}\n"})
    assert default_workers(tiny) == 1
    assert default_workers(_tree(tmp_path / "none", "0::/\n", {})) == CORES
