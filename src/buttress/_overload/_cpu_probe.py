"""Reading the CPU from the kernel: the process's cgroup v2, CPU PSI, the process's CPU time.

:class:`CpuProbe` reads, below a ``root`` (``/`` in production, a fixture tree in tests):

- ``cpu.stat``: ``usage_usec`` (CPU time used, every cgroup has it), ``nr_periods``,
  ``nr_throttled`` and ``throttled_usec`` (only where the cpu controller enforces a quota);
- ``cpu.max``: ``$MAX $PERIOD``, the quota as cores (MAX ÷ PERIOD); ``max`` is no limit. The
  tightest quota from the process's cgroup up to the root wins, since a limit set on a parent
  binds its children; ``cpu.stat`` is read where that quota is set, because that cgroup's
  periods are the ones the kernel counts and throttles (a child without its own quota counts
  none);
- ``cpuset.cpus.effective``: the CPUs the cgroup may run on, a list such as ``0-3,8-11``;
- ``cpu.pressure`` of the cgroup, else ``/proc/pressure/cpu`` (PSI);
- the process's own CPU time (``time.process_time``, injectable) and the host's CPU count
  (``os.cpu_count()``, injectable).

A value that cannot be known is ``None``, never a guess and never an exception: a file that is
absent, unreadable or garbage gives ``None`` for what it holds, and the rest of the reading
stands. Nothing here decides anything; ``_cpu_policy.py`` derives signals from two readings.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._cgroup import CgroupLocation, Psi, locate_cgroup, read_psi

__all__ = [
    "CpuProbe",
    "CpuReading",
    "parse_cpu_list",
    "parse_cpu_max",
    "parse_cpu_stat",
]


@dataclass(frozen=True, slots=True)
class CpuReading:
    """One look at the CPU. Counters are cumulative; ``None`` is "not known here".

    ``usage_usec`` and the throttling counters come from the ``cpu.stat`` of ``stat_path``
    (the cgroup whose quota binds, else the process's own). ``quota_cores`` is the tightest
    ``cpu.max`` up the tree as cores (``None``: no limit), set on ``quota_path``.
    ``cpuset_cpus`` counts the CPUs of ``cpuset.cpus.effective``; ``host_cpus`` the host's.
    ``process_seconds`` is this process's CPU time (user + system).

    A custom probe is any callable returning one of these, e.g. to play a scenario:

    >>> CpuReading(usage_usec=5_000_000, quota_cores=2.0).quota_cores
    2.0
    """

    usage_usec: int | None = None
    nr_periods: int | None = None
    nr_throttled: int | None = None
    throttled_usec: int | None = None
    quota_cores: float | None = None
    cpuset_cpus: int | None = None
    host_cpus: int | None = None
    psi: Psi | None = None
    process_seconds: float | None = None
    stat_path: Path | None = None
    quota_path: Path | None = None


# -- parsers (text in, numbers out; garbage is None) -------------------------------------------


def parse_cpu_stat(text: str) -> dict[str, int]:
    """The integer fields of a flat ``key value`` file such as ``cpu.stat``; lines that are not
    ``name integer`` are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdecimal():
            out[parts[0]] = int(parts[1])
    return out


def parse_cpu_max(text: str) -> float | None:
    """``cpu.max`` (``$MAX $PERIOD``) as cores: ``"50000 100000"`` is 0.5; ``"max 100000"``
    (no limit) and anything that does not parse are ``None``.

    >>> parse_cpu_max("150000 100000\\n"), parse_cpu_max("max 100000"), parse_cpu_max("x")
    (1.5, None, None)
    """
    parts = text.split()
    if len(parts) not in (1, 2) or not all(p.isdecimal() or p == "max" for p in parts):
        return None
    quota = parts[0]
    period = int(parts[1]) if len(parts) == 2 and parts[1] != "max" else 100_000
    if quota == "max" or int(quota) == 0 or period == 0:
        return None
    return int(quota) / period


def parse_cpu_list(text: str) -> int | None:
    """How many CPUs a kernel CPU list names: ``"0-3,8-11"`` is 8, ``"5"`` is 1.

    An empty list (a cgroup whose cpuset is not set) and anything malformed are ``None``.

    >>> parse_cpu_list("0-3,8-11\\n"), parse_cpu_list("0,2,4-5"), parse_cpu_list("3-1")
    (8, 4, None)
    """
    text = text.strip()
    if not text:
        return None
    count = 0
    for item in text.split(","):
        first, dash, last = item.strip().partition("-")
        if not first.isdecimal() or (dash and not last.isdecimal()):
            return None
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            return None
        count += high - low + 1
    return count


# -- the probe ---------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    """The file's text; ``None`` when it cannot be read for any reason (absent, refused, not
    text): one bad file costs its value only."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


class CpuProbe:
    """Reads the CPU this process's cgroup (v2) really has and uses, and the process's share.

    The cgroup is located once, here (``/proc/self/cgroup`` placed under the cgroup2 mount of
    ``/proc/self/mountinfo``); each call then reads a few small files. Where there is no
    cgroup v2 (macOS, a cgroup v1 host) the cgroup figures are ``None`` and only the process's
    CPU time and the host's CPU count are reported.

    >>> probe = CpuProbe()            # doctest: +SKIP
    >>> probe().quota_cores           # doctest: +SKIP
    2.0
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        *,
        host_cpus: int | None = None,
        process_time: Callable[[], float] | None = None,
    ) -> None:
        self.root = Path(root)
        self._host_cpus = host_cpus if host_cpus is not None else os.cpu_count()
        self._process_time = process_time if process_time is not None else time.process_time
        self.location: CgroupLocation | None = locate_cgroup(self.root, 2)
        self._chain = self.location.chain() if self.location is not None else []

    @property
    def cgroup_path(self) -> Path | None:
        """The process's cgroup directory, if cgroup v2 is mounted."""
        return self.location.path if self.location is not None else None

    def __call__(self) -> CpuReading:
        quota, quota_path = self._quota()
        stat_path = quota_path if quota_path is not None else self.cgroup_path
        stat = self._stat(stat_path)
        if stat is None and stat_path is not None and stat_path != self.cgroup_path:
            stat_path = self.cgroup_path  # the binding ancestor may not be readable from here
            stat = self._stat(stat_path)
        stat = stat or {}
        return CpuReading(
            usage_usec=stat.get("usage_usec"),
            nr_periods=stat.get("nr_periods"),
            nr_throttled=stat.get("nr_throttled"),
            throttled_usec=stat.get("throttled_usec"),
            quota_cores=quota,
            cpuset_cpus=self._cpuset(),
            host_cpus=self._host_cpus,
            psi=self._psi(),
            process_seconds=self._process_seconds(),
            stat_path=stat_path if stat else None,
            quota_path=quota_path,
        )

    def _quota(self) -> tuple[float | None, Path | None]:
        """The tightest ``cpu.max`` from the process's cgroup up to the root, and where."""
        best: float | None = None
        where: Path | None = None
        for node in self._chain:
            text = _read(node / "cpu.max")
            cores = parse_cpu_max(text) if text is not None else None
            if cores is not None and (best is None or cores < best):
                best, where = cores, node
        return best, where

    @staticmethod
    def _stat(directory: Path | None) -> dict[str, int] | None:
        if directory is None:
            return None
        text = _read(directory / "cpu.stat")
        return parse_cpu_stat(text) if text is not None else None

    def _cpuset(self) -> int | None:
        """The CPUs of the nearest ``cpuset.cpus.effective`` (the kernel already narrowed it by
        every ancestor's; a cgroup without the cpuset controller has no file, or an empty one)."""
        for node in self._chain:
            text = _read(node / "cpuset.cpus.effective")
            if text is not None and text.strip():
                return parse_cpu_list(text)
        return None

    def _psi(self) -> Psi | None:
        try:
            return read_psi(self.root, self.cgroup_path, "cpu")
        except (OSError, UnicodeDecodeError):  # a read the kernel fails oddly: not known
            return None

    def _process_seconds(self) -> float | None:
        try:
            seconds = float(self._process_time())
        except (OSError, ValueError, TypeError):
            return None
        return seconds if seconds >= 0 and seconds == seconds else None

    def __repr__(self) -> str:
        return f"CpuProbe(root={str(self.root)!r}, cgroup={self.cgroup_path})"
