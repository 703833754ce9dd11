"""How much memory a new allocation may take: checked before work whose result must fit in RAM
(patches kept in memory, a time-lapse restored in memory), so that it is refused with its size and a
way out instead of being killed by the kernel."""
from __future__ import annotations

import os

from .errors import CareError

#: Linux's memory figures (MemAvailable) for the whole machine.
MEMINFO = "/proc/meminfo"
#: This process's control groups (``N:controllers:/path`` lines).
PROC_CGROUP = "/proc/self/cgroup"
#: Where cgroups are mounted: v2 (one hierarchy) and v1 (a ``memory`` hierarchy).
CGROUP_ROOT = "/sys/fs/cgroup"
#: The files of a memory cgroup, v2 then v1: its limit, its use, its statistics and their reclaimable
#: page cache's key.
CGROUP_FILES = (("", "memory.max", "memory.current", "memory.stat", "inactive_file"),
                ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat", "total_inactive_file"))
#: Memory the result of a check may take, as a share of what is available.
SHARE = 0.8


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _own_cgroups():
    """This process's cgroup path per hierarchy: ``{"": "/a/b"}`` (v2) and ``{"memory": "/c"}`` (v1)."""
    paths = {}
    try:
        for line in _read(PROC_CGROUP).splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                paths[""] = path
            elif "memory" in controllers.split(","):
                paths["memory"] = path
    except (OSError, ValueError):
        pass
    return paths


def _cgroup_room():
    """Bytes left under the tightest memory limit of this process's cgroup and the cgroups above it
    (the limit less what that cgroup uses, its reclaimable page cache not counted), None without a
    limit or where none can be read. A container sees its own cgroup as the root; a process of a
    systemd slice (a JupyterHub without containers) has its limit at its own path."""
    own = _own_cgroups()
    rooms = []
    for hierarchy, limit_name, usage_name, stat_name, cache_key in CGROUP_FILES:
        base = os.path.join(CGROUP_ROOT, hierarchy)
        path = own.get(hierarchy, "/").strip("/")
        parts = path.split("/") if path else []
        for n in range(len(parts), -1, -1):   # the process's own cgroup up to the root
            d = os.path.join(base, *parts[:n])
            try:
                limit = _read(os.path.join(d, limit_name))
                usage = int(_read(os.path.join(d, usage_name)))
            except (OSError, ValueError):
                continue
            if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:   # no limit (v1: a huge number)
                continue
            cache = 0
            try:
                for line in _read(os.path.join(d, stat_name)).splitlines():
                    key, _, value = line.partition(" ")
                    if key == cache_key:
                        cache = int(value)
            except (OSError, ValueError):
                pass
            rooms.append(max(0, int(limit) - max(0, usage - cache)))
        if rooms:
            break
    return min(rooms) if rooms else None


def available_memory():
    """Bytes of memory available to a new allocation, None where unknown: Linux's MemAvailable, or less
    where the process's cgroup (a container, a JupyterHub's user slice) has a memory limit (v2 or v1)."""
    free = None
    try:
        for line in _read(MEMINFO).splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError):
        pass
    room = _cgroup_room()
    return room if free is None else free if room is None else min(free, room)


def size_text(n_bytes):
    """``n_bytes`` for people: ``"1.5 GiB"``, ``"12.0 MiB"``."""
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def fits(n_bytes):
    """Whether ``n_bytes`` fit in :data:`SHARE` of the available memory, and that memory (None where it is
    unknown: then it is taken to fit)."""
    free = available_memory()
    return (free is None or n_bytes <= SHARE * free), free


def require_memory(n_bytes, what, remedy):
    """Raise a :class:`~carecore.CareError` naming ``what`` (it "would take" the size), the memory and
    ``remedy`` where ``n_bytes`` do not fit (:func:`fits`)."""
    ok, free = fits(n_bytes)
    if not ok:
        raise CareError(f"{what} would take {size_text(n_bytes)} of memory, more than {SHARE * 100:.0f} % of the "
                        f"{size_text(free)} available: {remedy}")
