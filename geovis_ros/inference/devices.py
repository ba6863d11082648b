"""What this machine offers the backends: physical CPU cores (cgroup quota applied) and whether CUDA is usable.

A leaf of :mod:`geovis_ros.inference`: the backends and the backend selection import it, it imports none of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path


def physical_cpu_cores(sys_root: Path = Path("/sys"), cpus: Iterable[int] | None = None) -> int:
    """Physical cores this process may run on: hyper-thread siblings counted once, cgroup v2 quota applied.

    ``cpus``: logical CPU ids (default: this process's affinity); ``sys_root``: where sysfs is mounted.
    """
    if cpus is None:
        get_affinity = getattr(os, "sched_getaffinity", None)
        cpus = sorted(get_affinity(0)) if get_affinity else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = sys_root / f"devices/system/cpu/cpu{cpu}/topology"
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    count = max(1, len(cores))
    quota = _cgroup_cpu_quota(sys_root)
    return min(count, quota) if quota else count


def _cgroup_cpu_quota(sys_root: Path) -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` quota (rounded up), None when unlimited or unknown."""
    try:
        limit, period = (sys_root / "fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(1, math.ceil(int(limit) / int(period)))


def cuda_unavailable_reason() -> str | None:
    """Why torch cannot use a CUDA device here, or None if it can."""
    try:
        import torch
    except ImportError as err:
        return f"torch is not installed ({err})"
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False (no NVIDIA GPU or driver visible)"
    return None

