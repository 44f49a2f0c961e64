"""The default memory limit reads the container's cgroup limit: real files in fake cgroup trees."""
import pytest

from xlagen.engine.limits import cgroup_memory_limit, default_memory_limit, physical_memory

GIB = 2**30


def _tree(tmp_path, files, proc):
    """A fake /sys/fs/cgroup under tmp_path/cg with {relative path: content}, and a /proc/self/cgroup."""
    root = tmp_path / "cg"
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (tmp_path / "self_cgroup").write_text(proc)
    return dict(cgroup_root=str(root), proc_self_cgroup=str(tmp_path / "self_cgroup"))


@pytest.mark.parametrize("files,proc,expected", [
    ({"memory.max": f"{2 * GIB}\n"}, "0::/\n", 2 * GIB),                                  # v2, a limit at the root
    ({"memory.max": "max\n"}, "0::/\n", None),                                             # v2, no limit
    ({"memory.max": "max\n", "kubepods/pod1/memory.max": f"{3 * GIB}\n"}, "0::/kubepods/pod1\n", 3 * GIB),
    ({"kubepods/memory.max": f"{GIB}\n", "kubepods/pod1/memory.max": "max\n"}, "0::/kubepods/pod1\n", GIB),  # a parent's
    ({"memory/memory.limit_in_bytes": f"{4 * GIB}\n"}, "4:memory:/\n0::/\n", 4 * GIB),    # v1
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n",
      "memory/docker/abc/memory.limit_in_bytes": f"{GIB // 2}\n"}, "4:memory:/docker/abc\n", GIB // 2),
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, "4:memory:/\n", None),   # v1 "unlimited"
    ({"memory.max": "lots\n", "memory/memory.limit_in_bytes": "\x00\xff"}, "garbage", None),  # unreadable
    ({}, "0::/\n", None),                                                                  # no cgroup files
])
def test_cgroup_limit(tmp_path, files, proc, expected):
    assert cgroup_memory_limit(**_tree(tmp_path, files, proc)) == expected


def test_default_is_half_of_the_smaller_of_machine_and_cgroup(tmp_path):
    machine = physical_memory()
    assert machine and default_memory_limit(**_tree(tmp_path, {}, "0::/\n")) == machine // 2
    small = _tree(tmp_path / "small", {"memory.max": f"{GIB}\n"}, "0::/\n")
    assert default_memory_limit(**small) == min(machine, GIB) // 2
    assert default_memory_limit(cgroup_root=str(tmp_path / "absent"), proc_self_cgroup=str(tmp_path / "absent")) \
        == machine // 2
