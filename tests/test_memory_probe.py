"""The kernel readers on fixture trees laid out like real hosts and containers, and on this one."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from buttress import ConfigError, MemoryReading, SystemProbe
from buttress._memory._probe import (
    locate_cgroup,
    read_cgroup,
    read_meminfo,
    read_process_rss,
    read_psi,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
PAGE = os.sysconf("SC_PAGE_SIZE")
V1_UNLIMITED = "9223372036854771712"  # what cgroup v1 writes for "no limit"

MEMINFO = """\
MemTotal:       16303428 kB
MemFree:          825164 kB
MemAvailable:    6115020 kB
Buffers:          291212 kB
Cached:          5207208 kB
SwapCached:            0 kB
Active:          9116908 kB
Inactive:        4805444 kB
"""
HOST_TOTAL = 16303428 * 1024
HOST_AVAILABLE = 6115020 * 1024

SYSTEM_PSI = """\
some avg10=2.50 avg60=1.20 avg300=0.40 total=9876543
full avg10=0.90 avg60=0.30 avg300=0.05 total=1234567
"""
CGROUP_PSI = """\
some avg10=12.00 avg60=4.00 avg300=1.00 total=555
full avg10=3.00 avg60=1.00 avg300=0.25 total=111
"""

V2_MOUNTINFO = (
    "22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
    "28 27 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)
V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n"


def v2_stat(inactive_file: int) -> str:
    return (
        f"anon {200 * MiB}\nfile {120 * MiB}\nkernel {4 * MiB}\nshmem 0\n"
        f"active_anon {190 * MiB}\ninactive_anon {10 * MiB}\n"
        f"active_file {120 * MiB - inactive_file}\ninactive_file {inactive_file}\n"
        "pgfault 1234\npgmajfault 5\n"
    )


V2_EVENTS = "low 0\nhigh 7\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"


def v1_stat(inactive_file: int, hierarchical_limit: str = V1_UNLIMITED) -> str:
    return (
        f"cache {130 * MiB}\nrss {150 * MiB}\nmapped_file {8 * MiB}\n"
        f"inactive_file {inactive_file // 2}\nactive_file {MiB}\n"
        f"hierarchical_memory_limit {hierarchical_limit}\n"
        f"hierarchical_memsw_limit {V1_UNLIMITED}\n"
        f"total_cache {130 * MiB}\ntotal_rss {150 * MiB}\n"
        f"total_inactive_file {inactive_file}\ntotal_active_file {MiB}\n"
    )


def build(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (paths relative to ``root``) and return ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def proc_files(rss_pages: int = 25_600, psi: str | None = SYSTEM_PSI) -> dict[str, str]:
    files = {
        "proc/meminfo": MEMINFO,
        "proc/self/statm": f"310000 {rss_pages} 3000 700 0 90000 0\n",
    }
    if psi is not None:
        files["proc/pressure/memory"] = psi
    return files


def v2_container(root: Path, limit: str = str(512 * MiB), psi: bool = True) -> Path:
    """A container with its own cgroup namespace on a cgroup v2 host (docker, podman)."""
    files = {
        **proc_files(),
        "proc/self/cgroup": "0::/\n",
        "proc/self/mountinfo": V2_MOUNTINFO,
        "sys/fs/cgroup/cgroup.controllers": V2_CONTROLLERS,
        "sys/fs/cgroup/memory.max": limit + "\n",
        "sys/fs/cgroup/memory.high": "max\n",
        "sys/fs/cgroup/memory.current": f"{320 * MiB}\n",
        "sys/fs/cgroup/memory.stat": v2_stat(inactive_file=64 * MiB),
        "sys/fs/cgroup/memory.events": V2_EVENTS,
    }
    if psi:
        files["sys/fs/cgroup/memory.pressure"] = CGROUP_PSI
    return build(root, files)


# -- cgroup v2 ---------------------------------------------------------------------------------


def test_v2_container_limit_and_working_set(tmp_path: Path) -> None:
    root = v2_container(tmp_path)
    reading = SystemProbe(root=root)()
    assert reading.source == "cgroup_v2"
    assert reading.limit == 512 * MiB
    assert reading.used == 320 * MiB - 64 * MiB  # usage minus inactive_file
    assert reading.ratio == pytest.approx(256 / 512)
    assert reading.rss == 25_600 * PAGE
    assert reading.soft_limit is None  # memory.high is "max"
    assert dict(reading.events) == {
        "low": 0,
        "high": 7,
        "max": 3,
        "oom": 1,
        "oom_kill": 1,
        "oom_group_kill": 0,
    }


def test_v2_psi_comes_from_the_cgroup_before_the_system(tmp_path: Path) -> None:
    psi = SystemProbe(root=v2_container(tmp_path))().psi
    assert psi is not None
    assert (psi.some_avg10, psi.full_avg10, psi.some_total) == (12.0, 3.0, 555)


def test_v2_no_limit_falls_back_to_host_memory(tmp_path: Path) -> None:
    reading = SystemProbe(root=v2_container(tmp_path, limit="max"))()
    assert reading.source == "host"
    assert reading.limit == HOST_TOTAL
    assert reading.used == HOST_TOTAL - HOST_AVAILABLE


def test_v2_limit_at_or_above_host_memory_is_no_limit(tmp_path: Path) -> None:
    reading = SystemProbe(root=v2_container(tmp_path, limit=str(HOST_TOTAL + GiB)))()
    assert reading.source == "host"


def test_v2_explicit_source_uses_the_cgroup_even_without_a_limit(tmp_path: Path) -> None:
    reading = SystemProbe(root=v2_container(tmp_path, limit="max"), source="cgroup_v2")()
    assert reading.source == "cgroup_v2"
    assert reading.used == 256 * MiB
    assert reading.limit == HOST_TOTAL  # an unlimited cgroup is bounded by the host


def nested_v2_host(root: Path, leaf_max: str, slice_max: str) -> Path:
    """A systemd service on a cgroup v2 host, seen without a cgroup namespace."""
    base = "sys/fs/cgroup"
    return build(
        root,
        {
            **proc_files(),
            "proc/self/cgroup": "0::/system.slice/app.service\n",
            "proc/self/mountinfo": V2_MOUNTINFO,
            f"{base}/cgroup.controllers": V2_CONTROLLERS,
            # the root cgroup has no memory.max / memory.current
            f"{base}/memory.stat": v2_stat(inactive_file=GiB),
            f"{base}/system.slice/memory.max": slice_max + "\n",
            f"{base}/system.slice/memory.high": f"{900 * MiB}\n",
            f"{base}/system.slice/memory.current": f"{800 * MiB}\n",
            f"{base}/system.slice/memory.stat": v2_stat(inactive_file=100 * MiB),
            f"{base}/system.slice/memory.events": "low 0\nhigh 0\nmax 9\noom 0\noom_kill 0\n",
            f"{base}/system.slice/app.service/memory.max": leaf_max + "\n",
            f"{base}/system.slice/app.service/memory.high": "max\n",
            f"{base}/system.slice/app.service/memory.current": f"{300 * MiB}\n",
            f"{base}/system.slice/app.service/memory.stat": v2_stat(inactive_file=50 * MiB),
            f"{base}/system.slice/app.service/memory.events": "low 0\nhigh 0\nmax 0\n",
        },
    )


def test_v2_nested_smallest_limit_up_the_tree_wins(tmp_path: Path) -> None:
    root = nested_v2_host(tmp_path, leaf_max=str(2 * GiB), slice_max=str(GiB))
    location = locate_cgroup(root, 2)
    assert location is not None
    assert location.path == root / "sys/fs/cgroup/system.slice/app.service"
    memory = read_cgroup(location, HOST_TOTAL)
    assert memory is not None
    assert memory.limit == GiB
    assert memory.limit_path == root / "sys/fs/cgroup/system.slice"
    assert memory.soft_limit == 900 * MiB
    # The limit binds the slice, so the slice's usage is what it is measured against.
    assert memory.working_set == 700 * MiB
    assert memory.events["max"] == 9
    reading = SystemProbe(root=root)()
    assert (reading.source, reading.limit, reading.used) == ("cgroup_v2", GiB, 700 * MiB)


def test_v2_nested_leaf_limit_when_it_is_smallest(tmp_path: Path) -> None:
    root = nested_v2_host(tmp_path, leaf_max=str(400 * MiB), slice_max=str(GiB))
    reading = SystemProbe(root=root)()
    assert (reading.limit, reading.used) == (400 * MiB, 250 * MiB)


def test_v2_nested_no_limit_anywhere(tmp_path: Path) -> None:
    root = nested_v2_host(tmp_path, leaf_max="max", slice_max="max")
    assert SystemProbe(root=root)().source == "host"


def test_v2_root_cgroup_has_no_accounting(tmp_path: Path) -> None:
    root = build(
        tmp_path,
        {
            **proc_files(),
            "proc/self/cgroup": "0::/\n",
            "proc/self/mountinfo": V2_MOUNTINFO,
            "sys/fs/cgroup/cgroup.controllers": V2_CONTROLLERS,
            "sys/fs/cgroup/memory.pressure": CGROUP_PSI,
        },
    )
    reading = SystemProbe(root=root)()
    assert reading.source == "host"
    with pytest.raises(ConfigError, match="cgroup_v2"):
        SystemProbe(root=root, source="cgroup_v2")


def test_v2_cgroup_path_missing_falls_back_to_the_namespace_root(tmp_path: Path) -> None:
    # /proc/self/cgroup names a host path the container's mount does not show.
    root = v2_container(tmp_path)
    (root / "proc/self/cgroup").write_text("0::/kubepods/burstable/pod1/ctr\n")
    location = locate_cgroup(root, 2)
    assert location is not None
    assert location.path == root / "sys/fs/cgroup"
    assert SystemProbe(root=root)().limit == 512 * MiB


def test_v2_without_mountinfo_assumes_the_usual_layout(tmp_path: Path) -> None:
    root = v2_container(tmp_path)
    (root / "proc/self/mountinfo").unlink()
    assert SystemProbe(root=root)().source == "cgroup_v2"


# -- cgroup v1 ---------------------------------------------------------------------------------

V1_CGROUP = """\
12:pids:/docker/3f1c2a
11:memory:/docker/3f1c2a
10:cpu,cpuacct:/docker/3f1c2a
1:name=systemd:/docker/3f1c2a
0::/system.slice/containerd.service
"""


def v1_container(root: Path, limit: str = str(256 * MiB)) -> Path:
    """A docker container on a cgroup v1 host: the mount shows only its own cgroup."""
    mountinfo = (
        "22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
        "30 29 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755\n"
        "35 30 0:31 /docker/3f1c2a /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime "
        "master:15 - cgroup cgroup rw,memory\n"
        "36 30 0:32 /docker/3f1c2a /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime "
        "master:16 - cgroup cgroup rw,cpu,cpuacct\n"
    )
    m = "sys/fs/cgroup/memory"
    return build(
        root,
        {
            **proc_files(),
            "proc/self/cgroup": V1_CGROUP,
            "proc/self/mountinfo": mountinfo,
            f"{m}/memory.limit_in_bytes": limit + "\n",
            f"{m}/memory.soft_limit_in_bytes": V1_UNLIMITED + "\n",
            f"{m}/memory.usage_in_bytes": f"{200 * MiB}\n",
            f"{m}/memory.stat": v1_stat(inactive_file=40 * MiB),
            f"{m}/memory.failcnt": "17\n",
            f"{m}/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        },
    )


def test_v1_container_limit_and_working_set(tmp_path: Path) -> None:
    root = v1_container(tmp_path)
    location = locate_cgroup(root, 1)
    assert location is not None
    assert location.path == root / "sys/fs/cgroup/memory"
    reading = SystemProbe(root=root)()
    assert reading.source == "cgroup_v1"
    assert reading.limit == 256 * MiB
    assert reading.used == 160 * MiB  # usage minus total_inactive_file
    assert dict(reading.events) == {"max": 17, "oom_kill": 2}
    assert reading.soft_limit is None
    # no cgroup v2 mount: PSI comes from /proc/pressure/memory
    assert reading.psi is not None
    assert reading.psi.some_avg10 == 2.5


def test_v1_unlimited_falls_back_to_host(tmp_path: Path) -> None:
    reading = SystemProbe(root=v1_container(tmp_path, limit=V1_UNLIMITED))()
    assert reading.source == "host"


def test_v1_nested_smallest_limit_up_the_tree_wins(tmp_path: Path) -> None:
    # A kubelet host seen from the root namespace: pod limit below the container's.
    mountinfo = (
        "35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup "
        "rw,memory\n"
    )
    m = "sys/fs/cgroup/memory"
    pod, ctr = f"{m}/kubepods/pod7", f"{m}/kubepods/pod7/ctr1"
    root = build(
        tmp_path,
        {
            **proc_files(),
            "proc/self/cgroup": "4:memory:/kubepods/pod7/ctr1\n",
            "proc/self/mountinfo": mountinfo,
            f"{m}/memory.limit_in_bytes": V1_UNLIMITED + "\n",
            f"{m}/memory.usage_in_bytes": f"{4 * GiB}\n",
            f"{m}/kubepods/memory.limit_in_bytes": f"{8 * GiB}\n",
            f"{m}/kubepods/memory.usage_in_bytes": f"{3 * GiB}\n",
            f"{pod}/memory.limit_in_bytes": f"{512 * MiB}\n",
            f"{pod}/memory.usage_in_bytes": f"{500 * MiB}\n",
            f"{pod}/memory.stat": v1_stat(inactive_file=100 * MiB),
            f"{ctr}/memory.limit_in_bytes": f"{768 * MiB}\n",
            f"{ctr}/memory.usage_in_bytes": f"{450 * MiB}\n",
            f"{ctr}/memory.stat": v1_stat(inactive_file=50 * MiB),
        },
    )
    location = locate_cgroup(root, 1)
    assert location is not None
    assert location.path == root / ctr
    memory = read_cgroup(location, HOST_TOTAL)
    assert memory is not None
    assert (memory.limit, memory.limit_path) == (512 * MiB, root / pod)
    assert memory.working_set == 400 * MiB  # the pod's usage minus its inactive file


def test_v1_hierarchical_limit_covers_ancestors_hidden_by_the_namespace(tmp_path: Path) -> None:
    root = v1_container(tmp_path, limit=V1_UNLIMITED)
    stat = root / "sys/fs/cgroup/memory/memory.stat"
    stat.write_text(v1_stat(inactive_file=40 * MiB, hierarchical_limit=str(300 * MiB)))
    reading = SystemProbe(root=root)()
    assert (reading.source, reading.limit) == ("cgroup_v1", 300 * MiB)


def test_hybrid_host_memory_from_v1_psi_from_the_unified_cgroup(tmp_path: Path) -> None:
    # systemd's hybrid layout: controllers on v1, a controller-less v2 tree at unified/.
    root = v1_container(tmp_path)
    with (root / "proc/self/mountinfo").open("a") as f:
        f.write(
            "41 30 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 "
            "cgroup2 rw\n"
        )
    (root / "proc/self/cgroup").write_text(
        V1_CGROUP.replace("/system.slice/containerd.service", "/")
    )
    build(
        root,
        {
            "sys/fs/cgroup/unified/cgroup.controllers": "",
            "sys/fs/cgroup/unified/memory.pressure": CGROUP_PSI,
        },
    )
    reading = SystemProbe(root=root)()
    assert reading.source == "cgroup_v1"
    assert reading.psi is not None
    assert reading.psi.some_avg10 == 12.0


# -- host, process, PSI ------------------------------------------------------------------------


def test_host_only_machine(tmp_path: Path) -> None:
    root = build(tmp_path, proc_files())
    reading = SystemProbe(root=root)()
    assert (reading.source, reading.limit, reading.used) == (
        "host",
        HOST_TOTAL,
        HOST_TOTAL - HOST_AVAILABLE,
    )
    assert reading.events == {}


def test_meminfo_without_memavailable_estimates_it(tmp_path: Path) -> None:
    old = "\n".join(line for line in MEMINFO.splitlines() if "MemAvailable" not in line)
    host = read_meminfo(build(tmp_path, {"proc/meminfo": old}))
    assert host is not None
    assert host.available == (825164 + 291212 + 5207208) * 1024


def test_process_rss_from_statm(tmp_path: Path) -> None:
    root = build(tmp_path, proc_files(rss_pages=1234))
    assert read_process_rss(root) == 1234 * PAGE


def test_psi_missing_is_none_not_zero(tmp_path: Path) -> None:
    root = v2_container(tmp_path, psi=False)
    (root / "proc/pressure/memory").unlink()
    assert read_psi(root) is None
    assert SystemProbe(root=root)().psi is None


def test_psi_unsupported_read_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With psi=0 on the kernel command line the file exists but reads fail with EOPNOTSUPP.
    root = build(tmp_path, proc_files())
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "memory" and self.parent.name == "pressure":
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_read_text(self)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert read_psi(root) is None


def test_psi_some_only_kernel(tmp_path: Path) -> None:
    root = build(
        tmp_path, {"proc/pressure/memory": "some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n"}
    )
    psi = read_psi(root)
    assert psi is not None
    assert psi.some_avg300 == 3.0
    assert psi.full_avg10 is None


# -- sources ------------------------------------------------------------------------------------


def test_process_source_against_a_configured_budget(tmp_path: Path) -> None:
    root = v2_container(tmp_path)
    reading = SystemProbe(root=root, source="process", limit_bytes=200 * MiB)()
    assert (reading.source, reading.used, reading.limit) == ("process", 25_600 * PAGE, 200 * MiB)


def test_process_source_without_a_budget_uses_the_real_limit(tmp_path: Path) -> None:
    reading = SystemProbe(root=v2_container(tmp_path), source="process")()
    assert (reading.source, reading.limit) == ("process", 512 * MiB)


def test_auto_picks_the_limit_under_most_pressure(tmp_path: Path) -> None:
    root = v2_container(tmp_path)  # cgroup at 0.5
    rss = 25_600 * PAGE
    tight = SystemProbe(root=root, limit_bytes=int(rss / 0.9))()
    assert tight.source == "process"
    assert tight.ratio == pytest.approx(0.9, abs=1e-6)
    loose = SystemProbe(root=root, limit_bytes=rss * 10)()
    assert loose.source == "cgroup_v2"


def test_host_source_ignores_the_cgroup(tmp_path: Path) -> None:
    reading = SystemProbe(root=v2_container(tmp_path), source="host")()
    assert reading.source == "host"
    assert reading.limit == HOST_TOTAL


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"source": "swap"}, "source"),
        ({"source": "host", "limit_bytes": GiB}, "limit_bytes"),
        ({"limit_bytes": 0}, "limit_bytes"),
        ({"limit_bytes": 1.5}, "limit_bytes"),
        ({"source": "cgroup_v1"}, "source"),
    ],
)
def test_bad_probe_settings_name_the_setting(
    tmp_path: Path, kwargs: dict[str, object], path: str
) -> None:
    root = v2_container(tmp_path)
    with pytest.raises(ConfigError) as info:
        SystemProbe(root=root, **kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


def test_without_proc_psutil_is_the_fallback(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    reading = SystemProbe(root=tmp_path)()  # an empty root: no /proc, as on macOS
    assert reading.source == "host"
    assert reading.limit == psutil.virtual_memory().total
    assert reading.rss is not None
    assert reading.rss > 0


def test_without_proc_or_psutil_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # makes `import psutil` fail
    with pytest.raises(ConfigError, match=r"pip install psutil: the .memory. extra"):
        SystemProbe(root=tmp_path)


def test_reading_rejects_impossible_numbers() -> None:
    with pytest.raises(ValueError, match="limit"):
        MemoryReading("x", used=1, limit=0)
    with pytest.raises(ValueError, match="used"):
        MemoryReading("x", used=-1, limit=10)


# -- this machine -------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")
def test_this_machine() -> None:
    probe = SystemProbe()
    reading = probe()
    assert reading.source in ("cgroup_v2", "cgroup_v1", "host")
    assert reading.limit > 0
    assert 0.0 <= reading.ratio <= 1.0
    assert reading.rss is not None
    assert reading.rss > 0
    host = read_meminfo("/")
    assert host is not None
    assert reading.limit <= host.total
    process = SystemProbe(source="process")()
    assert 0.0 < process.ratio <= 1.0
