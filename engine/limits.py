"""How much memory this process may use: the machine's, or its container's cgroup limit.

Inside a container os.sysconf reports the host's memory, which may be many times what the
container is allowed; a call sized by it would be killed by the kernel instead of refused
with a MemoryLimitError. So the default limit reads the cgroup limit too.
"""
import os

# cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages, rounded): anything at
# or above this is no limit.
_V1_UNLIMITED = 2**60
_FALLBACK = 16 * 2**30  # assumed machine memory where it cannot be read


def _read_int(path):
    """The integer in a one-line file, or None when it is absent, unreadable, "max" or not an int."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        return int(text)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _own_cgroups(proc_self_cgroup):
    """This process's cgroup paths from /proc/self/cgroup: (v2 path from its "0::/path" line,
    v1 memory controller path from its "N:memory:/path" line), "" for the root or when unknown."""
    v2 = v1 = ""
    try:
        with open(proc_self_cgroup, encoding="utf-8") as f:
            for line in f:
                _, controllers, path = (line.rstrip("\n").split(":", 2) + ["", ""])[:3]
                if controllers == "":
                    v2 = path
                elif "memory" in controllers.split(","):
                    v1 = path
    except (OSError, UnicodeDecodeError):
        pass
    return v2.strip("/"), v1.strip("/")


def _smallest_up_the_tree(root, path, name, valid):
    """The smallest valid value of file `name` in cgroup `path` under `root` and in each parent
    up to `root` itself, or None."""
    parts = path.split("/") if path else []
    values = [_read_int(os.path.join(root, *parts[:depth], name)) for depth in range(len(parts), -1, -1)]
    values = [v for v in values if v is not None and valid(v)]
    return min(values) if values else None


def cgroup_memory_limit(cgroup_root="/sys/fs/cgroup", proc_self_cgroup="/proc/self/cgroup"):
    """The memory limit of this process's cgroup in bytes (python int), or None when none is set.

    cgroup v2: memory.max of the process's own cgroup and of each cgroup above it ("max" is no
    limit). cgroup v1: memory.limit_in_bytes of its memory cgroup and each one above it (a huge
    value is no limit). The smallest limit found counts. Files that are missing or hold anything
    else are ignored: this never raises.
    """
    v2, v1 = _own_cgroups(proc_self_cgroup)
    limits = [_smallest_up_the_tree(cgroup_root, v2, "memory.max", lambda v: v > 0),
              _smallest_up_the_tree(os.path.join(cgroup_root, "memory"), v1, "memory.limit_in_bytes",
                                    lambda v: 0 < v < _V1_UNLIMITED)]
    limits = [v for v in limits if v is not None]
    return min(limits) if limits else None


def physical_memory():
    """The machine's physical memory in bytes (python int), or None when it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_memory_limit(cgroup_root="/sys/fs/cgroup", proc_self_cgroup="/proc/self/cgroup"):
    """Half the memory this process may use, in bytes (python int): half of the smaller of the
    machine's physical memory and its cgroup's limit (16 GiB assumed when neither can be read)."""
    known = [m for m in (physical_memory(), cgroup_memory_limit(cgroup_root, proc_self_cgroup)) if m]
    return (min(known) if known else _FALLBACK) // 2
