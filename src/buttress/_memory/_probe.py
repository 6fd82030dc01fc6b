"""Reading memory from the kernel: cgroup v2 and v1, host ``/proc/meminfo``, process RSS, PSI.

Every reader takes ``root`` (``/`` in production) and reads the files below it, so tests point
the readers at fixture trees shaped like real ones. Nothing here decides anything: the
readers return numbers, :class:`SystemProbe` combines them into one :class:`MemoryReading`, and
the policy (``_policy.py``) turns readings into levels.

Why not psutil: ``psutil.virtual_memory()`` reads ``/proc/meminfo``, which inside a container
shows the host's memory, not the container's limit; services sized by it get OOM-killed. On
Linux we read the cgroup files; psutil is only the fallback where ``/proc`` does not exist.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .._cgroup import CgroupLocation, Psi, locate_cgroup, parse_psi, read_psi, read_text
from .._errors import ConfigError
from .._validate import int_at_least, is_finite

__all__ = [
    "SOURCES",
    "CgroupLocation",
    "CgroupMemory",
    "HostMemory",
    "MemoryReading",
    "Psi",
    "SystemProbe",
    "locate_cgroup",
    "parse_psi",
    "read_cgroup",
    "read_meminfo",
    "read_process_rss",
    "read_psi",
]

Source = Literal["auto", "cgroup", "cgroup_v2", "cgroup_v1", "host", "process"]
SOURCES: tuple[str, ...] = ("auto", "cgroup", "cgroup_v2", "cgroup_v1", "host", "process")

# cgroup v1 writes "no limit" as LONG_MAX rounded down to a page (9223372036854771712); any
# limit this large is no limit. A limit at or above the host's MemTotal binds nothing either.
_UNLIMITED = 1 << 60

_NO_EVENTS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    """One cgroup's memory as the kernel accounts it.

    ``limit`` is the smallest hard limit from the process's cgroup up to the root of the
    hierarchy (``None``: unlimited); ``usage``, ``inactive_file`` and ``events`` are read where
    that limit is set, since that is the cgroup the limit is measured against. The working set
    is usage minus inactive page cache, as kubelet, cAdvisor and ``docker stats`` compute it.
    """

    version: int
    path: Path
    limit: int | None
    limit_path: Path | None
    soft_limit: int | None
    usage: int
    inactive_file: int
    events: Mapping[str, int] = field(default_factory=lambda: _NO_EVENTS)

    @property
    def working_set(self) -> int:
        return max(0, self.usage - self.inactive_file)


@dataclass(frozen=True, slots=True)
class HostMemory:
    """The host's memory from ``/proc/meminfo`` (bytes)."""

    total: int
    available: int

    @property
    def used(self) -> int:
        return max(0, self.total - self.available)


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """What a probe reports: bytes ``used`` against a ``limit``, and where they came from.

    ``source`` is ``cgroup_v2``, ``cgroup_v1``, ``host``, ``process`` (process RSS against a
    configured budget or the real limit) or a name a custom probe picks. ``rss`` and ``psi``
    are ``None`` when the platform does not report them. ``events`` are cumulative counters
    (cgroup ``memory.events``: ``high``, ``max``, ``oom``, ``oom_kill``); the manager reports
    their increases.

    A custom probe is any callable returning one of these, e.g. to simulate pressure:

    >>> reading = MemoryReading(source="scenario", used=900, limit=1000)
    >>> round(reading.ratio, 2)
    0.9
    """

    source: str
    used: int
    limit: int
    rss: int | None = None
    psi: Psi | None = None
    soft_limit: int | None = None
    events: Mapping[str, int] = field(default_factory=lambda: _NO_EVENTS)

    def __post_init__(self) -> None:
        # A reading that is no number (NaN, inf, True) would compare as "no pressure" and end
        # shedding: refused here, so the manager counts it as a probe error, level kept.
        if not is_finite(self.limit) or self.limit <= 0:
            raise ValueError(
                f"MemoryReading.limit must be a finite number > 0 bytes, got {self.limit!r}"
            )
        if not is_finite(self.used) or self.used < 0:
            raise ValueError(
                f"MemoryReading.used must be a finite number >= 0 bytes, got {self.used!r}"
            )
        for name in ("rss", "soft_limit"):
            value = getattr(self, name)
            if value is not None and (not is_finite(value) or value < 0):
                raise ValueError(
                    f"MemoryReading.{name} must be a finite number >= 0 bytes or None, "
                    f"got {value!r}"
                )
        if self.psi is not None:
            for name in ("some_avg10", "full_avg10"):
                value = getattr(self.psi, name, None)
                if value is not None and not (is_finite(value) and 0 <= value <= 100):
                    raise ValueError(
                        f"MemoryReading.psi.{name} must be a percentage in [0, 100], got {value!r}"
                    )

    @property
    def ratio(self) -> float:
        """``used / limit``; above 1.0 only when a configured budget is overrun."""
        return self.used / self.limit


# -- small file readers (PSI and the cgroup's place are in ``_cgroup.py``) -------------------


def _read_int(path: Path) -> int | None:
    """An integer file; ``max`` (cgroup v2's "no limit") and absent files are ``None``."""
    text = read_text(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max" or not text:
        return None
    value = int(text)
    return None if value >= _UNLIMITED else value


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat ``key value`` file such as ``memory.stat`` or ``memory.events``."""
    out: dict[str, int] = {}
    for line in (read_text(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


# -- host and process ------------------------------------------------------------------------


def read_meminfo(root: str | os.PathLike[str] = "/") -> HostMemory | None:
    """MemTotal and MemAvailable from ``/proc/meminfo`` (``None`` off Linux)."""
    text = read_text(Path(root) / "proc/meminfo")
    if text is None:
        return None
    kib: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kib[key] = int(parts[0])
    if "MemTotal" not in kib:
        return None
    available = kib.get("MemAvailable")
    if available is None:  # kernels before 3.14: the estimate MemAvailable replaced
        available = kib.get("MemFree", 0) + kib.get("Buffers", 0) + kib.get("Cached", 0)
    return HostMemory(total=kib["MemTotal"] * 1024, available=available * 1024)


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_process_rss(root: str | os.PathLike[str] = "/") -> int | None:
    """This process's resident set size in bytes, from ``/proc/self/statm`` (cheap: one read)."""
    text = read_text(Path(root) / "proc/self/statm")
    if text is None:
        return None
    fields = text.split()
    return int(fields[1]) * _PAGE_SIZE if len(fields) > 1 else None


# -- cgroups ---------------------------------------------------------------------------------


def read_cgroup(location: CgroupLocation, host_total: int | None = None) -> CgroupMemory | None:
    """Read the memory of the located cgroup (``None`` when it has no memory accounting).

    A limit at or above ``host_total`` (the host's MemTotal) is reported as no limit.
    """
    v2 = location.version == 2
    limit_file, soft_file = (
        ("memory.max", "memory.high")
        if v2
        else (
            "memory.limit_in_bytes",
            "memory.soft_limit_in_bytes",
        )
    )
    usage_file = "memory.current" if v2 else "memory.usage_in_bytes"
    chain = location.chain()
    leaf = chain[0]
    if read_text(leaf / usage_file) is None:
        # cgroup v2's root has no memory.current, and a hybrid host's unified hierarchy may
        # not run the memory controller at all: no accounting to read here.
        return None
    limit: int | None = None
    limit_path: Path | None = None
    soft: int | None = None
    for node in chain:
        value = _read_int(node / limit_file)
        if value is not None and (limit is None or value < limit):
            limit, limit_path = value, node
        value = _read_int(node / soft_file)
        if value is not None and (soft is None or value < soft):
            soft = value
    stat = _read_keyed(leaf / "memory.stat")
    if not v2:
        # v1 also reports the effective limit of ancestors a namespace may hide from us.
        hierarchical = stat.get("hierarchical_memory_limit")
        if (
            hierarchical is not None
            and hierarchical < _UNLIMITED
            and (limit is None or hierarchical < limit)
        ):
            limit, limit_path = hierarchical, leaf
    if host_total is not None:
        if limit is not None and limit >= host_total:
            limit, limit_path = None, None
        if soft is not None and soft >= host_total:
            soft = None
    where = limit_path if limit_path is not None else leaf
    usage = _read_int(where / usage_file)
    if usage is None:  # the binding ancestor may not be readable from here
        where = leaf
        usage = _read_int(leaf / usage_file) or 0
    if where != leaf:
        stat = _read_keyed(where / "memory.stat")
    if v2:
        inactive = stat.get("inactive_file", 0)
        events: Mapping[str, int] = _read_keyed(where / "memory.events")
    else:
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        oom = _read_keyed(where / "memory.oom_control")
        failcnt = _read_int(where / "memory.failcnt")
        events = {
            k: v for k, v in (("max", failcnt), ("oom_kill", oom.get("oom_kill"))) if v is not None
        }
    return CgroupMemory(
        version=location.version,
        path=leaf,
        limit=limit,
        limit_path=limit_path,
        soft_limit=soft,
        usage=usage,
        inactive_file=inactive,
        events=MappingProxyType(dict(events)),
    )


# -- the probe the manager uses --------------------------------------------------------------


def check_source(source: str, limit_bytes: int | None) -> None:
    """``ConfigError`` unless ``source`` is a source and ``limit_bytes`` fits it (the rules that
    need no look at the system: a file is checked by them too)."""
    if source not in SOURCES:
        raise ConfigError("source", f"must be one of {', '.join(SOURCES)}; got {source!r}")
    if limit_bytes is not None:
        int_at_least("limit_bytes", limit_bytes, 1)
    if limit_bytes is not None and source not in ("auto", "process"):
        raise ConfigError(
            "limit_bytes",
            f"is a budget for process RSS and needs source 'auto' or 'process', not {source!r}",
        )


class SystemProbe:
    """Reads the memory pressure this process really faces, from the kernel's files.

    ``source`` picks what is compared with what:

    - ``"auto"``: the container's cgroup (v2, else v1) when it sets a limit below the host's
      memory, else the host; when ``limit_bytes`` is set, also process RSS against it. The
      reading under the most pressure (highest ratio) wins, and its ``source`` says which.
    - ``"cgroup"`` / ``"cgroup_v2"`` / ``"cgroup_v1"``: the cgroup's working set against its
      limit (the host's memory when the cgroup has none).
    - ``"host"``: host used (MemTotal − MemAvailable) against MemTotal.
    - ``"process"``: this process's RSS against ``limit_bytes``, or against the real limit.

    Cgroup directories are located once, here; each call then reads a handful of small files.
    Where ``/proc`` does not exist (macOS, Windows) the host and process figures come from
    psutil, which must then be installed (the ``memory`` extra: ``pip install psutil``).

    >>> probe = SystemProbe()              # doctest: +SKIP
    >>> probe().source                     # doctest: +SKIP
    'cgroup_v2'
    """

    def __init__(
        self,
        *,
        source: Source | str = "auto",
        limit_bytes: int | None = None,
        root: str | os.PathLike[str] = "/",
    ) -> None:
        check_source(source, limit_bytes)
        self.source = source
        self.limit_bytes = limit_bytes
        self.root = Path(root)
        self._psutil: Any = None
        if read_meminfo(self.root) is None:
            try:
                psutil = importlib.import_module("psutil")
            except ImportError:
                raise ConfigError(
                    "source",
                    f"no /proc/meminfo under {str(self.root)!r} and psutil is not installed "
                    "(pip install psutil: the 'memory' extra)",
                ) from None
            self._psutil = psutil
        v2 = locate_cgroup(self.root, 2)
        v1 = locate_cgroup(self.root, 1)
        # PSI comes from the v2 cgroup even on a hybrid host whose memory controller is v1.
        self._psi_dir = v2.path if v2 is not None else None
        self._cgroups = [loc for loc in (v2, v1) if loc is not None and self._accounts(loc)]
        if source in ("cgroup_v2", "cgroup_v1"):
            self._cgroups = [c for c in self._cgroups if c.version == int(source[-1])]
        if source == "host":
            self._cgroups = []
        if source.startswith("cgroup") and not self._cgroups:
            raise ConfigError(
                "source", f"{source!r}: no cgroup memory accounting found under {str(self.root)!r}"
            )
        if source == "process" and self.rss() is None:
            raise ConfigError("source", f"'process': cannot read RSS under {str(self.root)!r}")

    @staticmethod
    def _accounts(location: CgroupLocation) -> bool:
        name = "memory.current" if location.version == 2 else "memory.usage_in_bytes"
        return (location.path / name).exists()

    @property
    def cgroup_path(self) -> Path | None:
        """The directory of the cgroup whose memory is read, if any."""
        return self._cgroups[0].path if self._cgroups else None

    def host(self) -> HostMemory:
        if self._psutil is not None:
            vm = self._psutil.virtual_memory()
            return HostMemory(total=int(vm.total), available=int(vm.available))
        host = read_meminfo(self.root)
        if host is None:
            raise OSError(f"{self.root / 'proc/meminfo'} disappeared")
        return host

    def rss(self) -> int | None:
        if self._psutil is not None:
            return int(self._psutil.Process().memory_info().rss)
        return read_process_rss(self.root)

    def cgroup(self, host_total: int | None) -> CgroupMemory | None:
        for location in self._cgroups:
            memory = read_cgroup(location, host_total)
            if memory is not None:
                return memory
        return None

    def __call__(self) -> MemoryReading:
        host = self.host()
        common: dict[str, Any] = {"rss": self.rss(), "psi": read_psi(self.root, self._psi_dir)}
        cg = self.cgroup(host.total)
        if cg is not None:
            common.update(soft_limit=cg.soft_limit, events=cg.events)
        if cg is not None and (cg.limit is not None or self.source.startswith("cgroup")):
            limit = cg.limit if cg.limit is not None else host.total
            real = MemoryReading(f"cgroup_v{cg.version}", cg.working_set, limit, **common)
        else:
            real = MemoryReading("host", host.used, host.total, **common)
        if self.source == "process" or self.limit_bytes is not None:
            budget = self.limit_bytes if self.limit_bytes is not None else real.limit
            own = MemoryReading("process", common["rss"] or 0, budget, **common)
            if self.source == "process" or own.ratio > real.ratio:
                return own
        return real

    def __repr__(self) -> str:
        return (
            f"SystemProbe(source={self.source!r}, limit_bytes={self.limit_bytes!r}, "
            f"root={str(self.root)!r}, cgroup={self.cgroup_path})"
        )
