"""The CPU probe on fixture trees laid out like real cgroup v2 hosts and containers."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from buttress._overload import _cpu_probe
from buttress._overload._cpu_policy import cpu_signals, effective_cores
from buttress._overload._cpu_probe import CpuProbe, parse_cpu_list, parse_cpu_max, parse_cpu_stat

MOUNTINFO = (
    "22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
    "28 27 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)
CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n"
SYSTEM_PSI = "some avg10=3.50 avg60=2.00 avg300=1.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"  # noqa: E501
CGROUP_PSI = "some avg10=42.10 avg60=30.00 avg300=12.50 total=987654\nfull avg10=40.00 avg60=28.00 avg300=11.00 total=876543\n"  # noqa: E501


def cpu_stat(usage: int, periods: int | None = None, throttled: int | None = None) -> str:
    """``cpu.stat`` as kernel 6.x writes it; the throttling lines only with the controller."""
    text = f"usage_usec {usage}\nuser_usec {usage * 3 // 4}\nsystem_usec {usage // 4}\n"
    text += "core_sched.force_idle_usec 0\n"
    if periods is not None and throttled is not None:
        text += (
            f"nr_periods {periods}\nnr_throttled {throttled}\n"
            f"throttled_usec {throttled * 20_000}\nnr_bursts 0\nburst_usec 0\n"
        )
    return text


def build(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def container(
    root: Path,
    cpu_max: str = "200000 100000",
    stat: str | None = None,
    cpuset: str = "0-7\n",
    psi: str | None = CGROUP_PSI,
) -> Path:
    """A container with its own cgroup namespace on a cgroup v2 host (docker, podman)."""
    base = "sys/fs/cgroup"
    files = {
        "proc/self/cgroup": "0::/\n",
        "proc/self/mountinfo": MOUNTINFO,
        "proc/pressure/cpu": SYSTEM_PSI,
        f"{base}/cgroup.controllers": CONTROLLERS,
        f"{base}/cpu.max": cpu_max + "\n",
        f"{base}/cpu.stat": stat if stat is not None else cpu_stat(5_000_000, 1000, 0),
        f"{base}/cpuset.cpus.effective": cpuset,
    }
    if psi is not None:
        files[f"{base}/cpu.pressure"] = psi
    return build(root, files)


def probe_at(root: Path, process_seconds: float = 1.25) -> CpuProbe:
    return CpuProbe(root, host_cpus=64, process_time=lambda: process_seconds)


def test_doctests() -> None:
    assert doctest.testmod(_cpu_probe).failed == 0


# -- a container, throttled or not --------------------------------------------------------------


def test_container_quota_cpuset_stat_and_psi(tmp_path: Path) -> None:
    reading = probe_at(container(tmp_path, stat=cpu_stat(7_000_000, 1200, 300)))()
    assert reading.quota_cores == 2.0
    assert reading.quota_path == tmp_path / "sys/fs/cgroup"
    assert reading.cpuset_cpus == 8
    assert reading.host_cpus == 64
    assert (reading.usage_usec, reading.nr_periods, reading.nr_throttled) == (7_000_000, 1200, 300)
    assert reading.throttled_usec == 300 * 20_000
    assert reading.stat_path == tmp_path / "sys/fs/cgroup"
    assert reading.psi is not None
    assert reading.psi.some_avg10 == 42.1  # the cgroup's, not the system's 3.5
    assert reading.process_seconds == 1.25
    assert effective_cores(reading) == 2.0  # the quota is tighter than the 8 CPUs


def two_readings(tmp_path: Path, before: str, after: str) -> tuple[float | None, float | None]:
    root = container(tmp_path, stat=before)
    probe = probe_at(root)
    first = probe()
    (root / "sys/fs/cgroup/cpu.stat").write_text(after)
    signals = cpu_signals(first, probe(), elapsed=2.0)
    return signals.throttle_ratio, signals.utilisation


def test_throttled_container(tmp_path: Path) -> None:
    # 20 periods with work in 2 s, 8 of them out of quota; 3.6 s of CPU over 2 s of 2 cores.
    ratio, utilisation = two_readings(
        tmp_path, cpu_stat(10_000_000, 1000, 100), cpu_stat(13_600_000, 1020, 108)
    )
    assert ratio == pytest.approx(0.4)
    assert utilisation == pytest.approx(0.9)


def test_container_not_throttled(tmp_path: Path) -> None:
    ratio, utilisation = two_readings(
        tmp_path, cpu_stat(10_000_000, 1000, 100), cpu_stat(11_000_000, 1020, 100)
    )
    assert ratio == 0.0
    assert utilisation == pytest.approx(0.25)


def test_idle_container_counts_no_periods_and_no_throttling(tmp_path: Path) -> None:
    ratio, utilisation = two_readings(
        tmp_path, cpu_stat(10_000_000, 1000, 100), cpu_stat(10_000_000, 1000, 100)
    )
    assert (ratio, utilisation) == (0.0, 0.0)


def test_counters_that_go_back_are_a_reset_not_a_figure(tmp_path: Path) -> None:
    ratio, utilisation = two_readings(
        tmp_path, cpu_stat(10_000_000, 1000, 100), cpu_stat(1_000, 3, 1)
    )
    assert (ratio, utilisation) == (None, None)


# -- no limit, and limits up the tree -----------------------------------------------------------


def test_no_limit_measures_against_the_cpuset(tmp_path: Path) -> None:
    root = container(tmp_path, cpu_max="max 100000", stat=cpu_stat(5_000_000))
    reading = probe_at(root)()
    assert reading.quota_cores is None
    assert reading.quota_path is None
    assert reading.nr_periods is None  # no cpu controller lines: throttling unknown
    assert effective_cores(reading) == 8.0
    signals = cpu_signals(reading, reading, elapsed=1.0)
    assert signals.throttle_ratio is None
    assert signals.utilisation == 0.0


def test_no_limit_and_no_cpuset_measures_against_the_host(tmp_path: Path) -> None:
    root = container(tmp_path, cpu_max="max 100000")
    (root / "sys/fs/cgroup/cpuset.cpus.effective").unlink()
    reading = probe_at(root)()
    assert (reading.quota_cores, reading.cpuset_cpus) == (None, None)
    assert effective_cores(reading) == 64.0


def systemd_service(root: Path, leaf_max: str, slice_max: str) -> Path:
    """A service on a cgroup v2 host, seen without a cgroup namespace: quotas on the slice."""
    base = "sys/fs/cgroup"
    return build(
        root,
        {
            "proc/self/cgroup": "0::/system.slice/app.service\n",
            "proc/self/mountinfo": MOUNTINFO,
            "proc/pressure/cpu": SYSTEM_PSI,
            f"{base}/cgroup.controllers": CONTROLLERS,
            f"{base}/cpu.stat": cpu_stat(900_000_000_000),  # the root has no cpu.max
            f"{base}/cpuset.cpus.effective": "0-15\n",
            f"{base}/system.slice/cpu.max": slice_max + "\n",
            f"{base}/system.slice/cpu.stat": cpu_stat(80_000_000, 5000, 900),
            f"{base}/system.slice/cpuset.cpus.effective": "\n",  # cpuset not set here
            f"{base}/system.slice/app.service/cpu.max": leaf_max + "\n",
            f"{base}/system.slice/app.service/cpu.stat": cpu_stat(30_000_000, 0, 0),
            f"{base}/system.slice/app.service/cpu.pressure": CGROUP_PSI,
        },
    )


def test_a_limit_on_a_parent_cgroup_binds_and_its_stat_is_read(tmp_path: Path) -> None:
    root = systemd_service(tmp_path, leaf_max="max 100000", slice_max="150000 100000")
    probe = probe_at(root)
    assert probe.cgroup_path == root / "sys/fs/cgroup/system.slice/app.service"
    reading = probe()
    assert reading.quota_cores == 1.5
    assert reading.quota_path == root / "sys/fs/cgroup/system.slice"
    # The slice's periods are the ones the kernel throttles; the service counts none.
    assert (reading.nr_periods, reading.nr_throttled) == (5000, 900)
    assert reading.stat_path == reading.quota_path
    assert reading.cpuset_cpus == 16  # the nearest non-empty cpuset, up the tree
    assert effective_cores(reading) == 1.5


def test_the_tightest_limit_up_the_tree_wins(tmp_path: Path) -> None:
    root = systemd_service(tmp_path, leaf_max="50000 100000", slice_max="400000 100000")
    reading = probe_at(root)()
    assert reading.quota_cores == 0.5
    assert reading.quota_path == root / "sys/fs/cgroup/system.slice/app.service"
    assert reading.usage_usec == 30_000_000


def test_a_period_other_than_100ms(tmp_path: Path) -> None:
    reading = probe_at(container(tmp_path, cpu_max="25000 50000"))()
    assert reading.quota_cores == 0.5


# -- cpusets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("0-3,8-11\n", 8),  # two ranges (Envoy counts only the first)
        ("0\n", 1),
        ("0,2,4,6\n", 4),
        ("0-1,4,6-7\n", 5),
        ("16-31", 16),
        ("\n", None),  # empty: the cgroup sets no cpuset
        ("0-", None),
        ("a-b", None),
        ("3-1", None),
        ("0,,1", None),
        ("-1", None),
    ],
)
def test_cpu_lists(text: str, count: int | None) -> None:
    assert parse_cpu_list(text) == count


def test_a_cpuset_list_bounds_the_cores(tmp_path: Path) -> None:
    reading = probe_at(container(tmp_path, cpu_max="max 100000", cpuset="0-1,8-9\n"))()
    assert reading.cpuset_cpus == 4
    assert effective_cores(reading) == 4.0


def test_a_cpuset_smaller_than_the_quota_bounds_the_cores(tmp_path: Path) -> None:
    reading = probe_at(container(tmp_path, cpu_max="800000 100000", cpuset="2-4\n"))()
    assert (reading.quota_cores, reading.cpuset_cpus) == (8.0, 3)
    assert effective_cores(reading) == 3.0


# -- PSI ------------------------------------------------------------------------------------------


def test_psi_falls_back_to_the_system_file(tmp_path: Path) -> None:
    reading = probe_at(container(tmp_path, psi=None))()
    assert reading.psi is not None
    assert reading.psi.some_avg10 == 3.5


def test_psi_absent_everywhere_is_none_not_zero(tmp_path: Path) -> None:
    root = container(tmp_path, psi=None)
    (root / "proc/pressure/cpu").unlink()
    reading = probe_at(root)()
    assert reading.psi is None
    assert cpu_signals(None, reading, 0.0).psi_some_avg10 is None


# -- garbage, and no cgroup at all ----------------------------------------------------------------


def test_garbage_files_give_none_for_their_values_only(tmp_path: Path) -> None:
    root = container(tmp_path, cpu_max="lots of cpu", stat="usage_usec many\nnr_periods 12\n")
    (root / "sys/fs/cgroup/cpuset.cpus.effective").write_text("every one\n")
    (root / "sys/fs/cgroup/cpu.pressure").write_text("some avg10=high\n")
    reading = probe_at(root)()
    assert reading.quota_cores is None
    assert reading.usage_usec is None
    assert reading.nr_periods == 12  # the line that parses still counts
    assert reading.cpuset_cpus is None
    assert reading.psi is None  # the cgroup's file is garbage: not the system's instead
    assert reading.process_seconds == 1.25
    assert effective_cores(reading) == 64.0


def test_binary_and_unreadable_files_give_none(tmp_path: Path) -> None:
    root = container(tmp_path)
    (root / "sys/fs/cgroup/cpu.stat").write_bytes(b"\xff\xfe\x00usage")
    (root / "sys/fs/cgroup/cpu.max").unlink()
    (root / "sys/fs/cgroup/cpu.max").mkdir()  # a directory where a file should be: EISDIR
    reading = probe_at(root)()
    assert (reading.usage_usec, reading.quota_cores) == (None, None)
    assert reading.cpuset_cpus == 8


def test_a_failing_process_clock_gives_none(tmp_path: Path) -> None:
    def broken() -> float:
        raise OSError("no clock")

    probe = CpuProbe(container(tmp_path), host_cpus=4, process_time=broken)
    assert probe().process_seconds is None


def test_without_cgroup_v2_only_the_process_and_host_are_known(tmp_path: Path) -> None:
    root = build(tmp_path, {"proc/self/cgroup": "4:cpu,cpuacct:/\n"})
    probe = CpuProbe(root, host_cpus=4, process_time=iter([10.0, 13.0]).__next__)
    assert probe.cgroup_path is None
    first, second = probe(), probe()
    assert (first.usage_usec, first.quota_cores, first.cpuset_cpus, first.psi) == (
        None,
        None,
        None,
        None,
    )
    signals = cpu_signals(first, second, elapsed=1.0)
    assert signals.utilisation == pytest.approx(0.75)  # 3 s of CPU in 1 s over 4 cores
    assert signals.utilisation_source == "process"
    assert signals.throttle_ratio is None


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("max 100000", None),
        ("max", None),
        ("100000", 1.0),  # the period defaults to 100 ms
        ("0 100000", None),
        ("50000 0", None),
        ("-1 100000", None),
        ("1 2 3", None),
        ("", None),
    ],
)
def test_cpu_max(text: str, cores: float | None) -> None:
    assert parse_cpu_max(text) == cores


def test_cpu_stat_skips_lines_that_are_not_counters() -> None:
    assert parse_cpu_stat("usage_usec 5\nnr_periods -3\nweird\nnr_throttled 2 2\n") == {
        "usage_usec": 5
    }


def test_this_machine_reads_without_error() -> None:
    reading = CpuProbe()()
    assert reading.host_cpus is None or reading.host_cpus >= 1
    assert reading.process_seconds is not None
