"""A process's CPU cgroup: its quota and how often the quota throttled it.

Both hierarchies are read, as the kernel offers them (docs/output-root-cause.md,
cpu-starvation):

* cgroup v2: ``cpu.max`` ("max 100000" or "10000 100000": quota and period in µs),
  ``cpu.stat`` ``nr_periods``, ``nr_throttled``, ``throttled_usec``;
* cgroup v1 (the ``cpu`` controller): ``cpu.cfs_quota_us`` (-1 = none),
  ``cpu.cfs_period_us``, ``cpu.stat`` ``nr_periods``, ``nr_throttled``,
  ``throttled_time`` (ns).

The process's cgroup comes from ``/proc/PID/cgroup``, the directory from
``/proc/self/mountinfo`` (a mount may show only a subtree: its root is cut off the
path).  A quota binds where it is set, on the process's cgroup or an ancestor:
the nearest cgroup with one is the one whose counters tell the throttling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuCgroup:
    version: int  # 1 or 2
    path: str  # as /proc/PID/cgroup names it, e.g. /system.slice/openvswitch-switch.service
    directory: str  # where its files are
    limited: str | None  # the cgroup (path) whose quota binds: this one or an ancestor; None: no quota
    limited_directory: str | None
    quota_us: int | None
    period_us: int | None

    @property
    def quota_file(self) -> str | None:
        if self.limited_directory is None:
            return None
        return os.path.join(self.limited_directory, "cpu.max" if self.version == 2 else "cpu.cfs_quota_us")

    def stat(self) -> dict[str, int]:
        """nr_periods, nr_throttled, throttled_us of the limiting cgroup (else this one)."""
        return read_stat(self.limited_directory or self.directory, self.version)


def _mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str, str, set[str]]]:
    """(fstype, mount root, mount point, super options) of the cgroup mounts."""
    out = []
    with open(mountinfo) as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields, tail = pre.split(), post.split()
            if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                continue
            out.append((tail[0], fields[3], fields[4].replace("\\040", " "), set(tail[2].split(","))))
    return out


def _under(mount_root: str, mount_point: str, path: str) -> str | None:
    if mount_root == "/":
        return os.path.join(mount_point, path.lstrip("/"))
    if path == mount_root or path.startswith(mount_root.rstrip("/") + "/"):
        return os.path.join(mount_point, path[len(mount_root):].lstrip("/"))
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def read_quota(directory: str, version: int) -> tuple[int | None, int | None]:
    """(quota µs, period µs) set on this cgroup; quota None when there is none."""
    if version == 2:
        parts = (_read(os.path.join(directory, "cpu.max")) or "").split()
        if not parts:
            return None, None
        return (None if parts[0] == "max" else int(parts[0])), (int(parts[1]) if len(parts) > 1 else None)
    quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
    period = _read(os.path.join(directory, "cpu.cfs_period_us"))
    q = int(quota) if quota and quota.strip().lstrip("-").isdigit() else -1
    return (q if q > 0 else None), (int(period) if period and period.strip().isdigit() else None)


def read_stat(directory: str, version: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in (_read(os.path.join(directory, "cpu.stat")) or "").splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[name] = int(value)
    throttled_us = values.get("throttled_usec") if version == 2 else values.get("throttled_time", 0) // 1000
    return {"nr_periods": values.get("nr_periods", 0), "nr_throttled": values.get("nr_throttled", 0),
            "throttled_us": throttled_us or 0}


def cpu_controller_mount(mountinfo: str = "/proc/self/mountinfo") -> tuple[int, str] | None:
    """(version, mount point) of the hierarchy that has the cpu controller: v1's ``cpu``
    where mounted, else a cgroup2 whose root offers ``cpu``."""
    mounts = _mounts(mountinfo)
    v1 = next((m for m in mounts if m[0] == "cgroup" and "cpu" in m[3]), None)
    if v1 is not None:
        return 1, v1[2]
    for m in mounts:
        if m[0] == "cgroup2" and "cpu" in (_read(os.path.join(m[2], "cgroup.controllers")) or "").split():
            return 2, m[2]
    return None


def cpu_cgroup(pid: int, proc: str = "/proc", mountinfo: str = "/proc/self/mountinfo") -> CpuCgroup | None:
    """The CPU cgroup of ``pid`` (v1 ``cpu`` controller where mounted, else the v2 cgroup);
    None when neither can be found."""
    text = _read(f"{proc}/{pid}/cgroup")
    if text is None:
        return None
    mounts = _mounts(mountinfo)
    lines = [line.split(":", 2) for line in text.splitlines() if line.count(":") >= 2]
    # The cpu controller on a v1 hierarchy decides where it is mounted; else the v2 cgroup.
    v1 = next((path for _, controllers, path in lines if "cpu" in controllers.split(",")), None)
    v1_mount = next((m for m in mounts if m[0] == "cgroup" and "cpu" in m[3]), None)
    v2 = next((path for hier, controllers, path in lines if hier == "0" and not controllers), None)
    v2_mount = next((m for m in mounts if m[0] == "cgroup2"), None)
    for version, path, mount in ((1, v1, v1_mount), (2, v2, v2_mount)):
        if path is None or mount is None:
            continue
        directory = _under(mount[1], mount[2], path)
        if directory is None or not os.path.exists(os.path.join(directory, "cpu.stat")):
            continue
        limited = limited_dir = quota = period = None
        level, level_dir = path, directory
        while True:
            q, p = read_quota(level_dir, version)
            if q is not None:
                limited, limited_dir, quota, period = level, level_dir, q, p
                break
            if level in ("/", "") or level_dir.rstrip("/") == mount[2].rstrip("/"):
                break
            level, level_dir = os.path.dirname(level.rstrip("/")) or "/", os.path.dirname(level_dir.rstrip("/"))
        return CpuCgroup(version, path, directory, limited, limited_dir, quota, period)
    return None
