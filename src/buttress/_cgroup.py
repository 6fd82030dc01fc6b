"""Where this process's cgroup is, and how the kernel's small files read: the shared readers.

Every reader takes ``root`` (``/`` in production) and reads the files below it, so tests point
them at fixture trees shaped like real hosts and containers. The memory probe
(``_memory/_probe.py``) and the CPU probe (``_overload/_cpu_probe.py``) read through them.
Nothing here decides anything.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CgroupLocation",
    "Psi",
    "locate_cgroup",
    "parse_psi",
    "read_psi",
    "read_text",
    "under",
]


@dataclass(frozen=True, slots=True)
class Psi:
    """Pressure stall information: the share of time (percent) tasks waited for a resource
    (memory, CPU).

    ``some``: at least one task stalled; ``full``: every non-idle task stalled at once (the
    severe signal). Averages over 10, 60 and 300 s; totals in microseconds. ``full_*`` is
    ``None`` on kernels that report only ``some``.
    """

    some_avg10: float
    some_avg60: float
    some_avg300: float
    some_total: int
    full_avg10: float | None = None
    full_avg60: float | None = None
    full_avg300: float | None = None
    full_total: int | None = None


def read_text(path: Path) -> str | None:
    """The file's text, or ``None`` when it is absent or the kernel refuses the read."""
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    except OSError as exc:
        # PSI files exist but fail with EOPNOTSUPP when the kernel booted with psi=0.
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENODEV):
            return None
        raise


def under(root: Path, absolute: str) -> Path:
    """The absolute path ``absolute`` of the system, inside the tree at ``root``."""
    return root / absolute.lstrip("/")


# -- PSI -------------------------------------------------------------------------------------


def parse_psi(text: str) -> Psi | None:
    """Parse ``some avg10=… avg60=… avg300=… total=…`` (and the ``full`` line)."""
    lines: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        lines[kind] = dict(item.split("=", 1) for item in rest.split() if "=" in item)
    some = lines.get("some")
    if not some:
        return None
    full = lines.get("full")
    try:
        return Psi(
            some_avg10=float(some["avg10"]),
            some_avg60=float(some["avg60"]),
            some_avg300=float(some["avg300"]),
            some_total=int(some["total"]),
            full_avg10=float(full["avg10"]) if full else None,
            full_avg60=float(full["avg60"]) if full else None,
            full_avg300=float(full["avg300"]) if full else None,
            full_total=int(full["total"]) if full else None,
        )
    except (KeyError, ValueError):
        return None


def read_psi(
    root: str | os.PathLike[str] = "/",
    cgroup_dir: Path | None = None,
    resource: str = "memory",
) -> Psi | None:
    """PSI of ``resource`` (``memory``, ``cpu``, ``io``) for the cgroup (``<resource>.pressure``)
    or else the system (``/proc/pressure/<resource>``).

    ``None`` when the kernel has no PSI (before 4.20, or booted without ``psi=1``): absent is
    not the same as zero pressure, so it is never reported as 0. A cgroup file that exists but
    does not parse is ``None`` too, not the system's figure: that would be another scope.
    """
    if cgroup_dir is not None:
        text = read_text(cgroup_dir / f"{resource}.pressure")
        if text is not None:
            return parse_psi(text)
    text = read_text(Path(root) / "proc/pressure" / resource)
    return parse_psi(text) if text is not None else None


# -- where the cgroup is ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CgroupLocation:
    """Where this process's cgroup is: its directory and the hierarchy's mount point."""

    version: int
    path: Path
    mount: Path

    def chain(self) -> list[Path]:
        """The cgroup's directory and each parent up to the mount point, leaf first."""
        out = [self.path]
        node = self.path
        while node != self.mount and self.mount in node.parents:
            node = node.parent
            out.append(node)
        return out


def _mounts(root: Path, controller: str) -> dict[int, tuple[str, Path]]:
    """The cgroup v2 mount (key 2) and the v1 mount of ``controller`` (key 1): (mount root,
    mount point)."""
    found: dict[int, tuple[str, Path]] = {}
    text = read_text(root / "proc/self/mountinfo")
    if text is None:
        # No mountinfo (a bare fixture or an odd sandbox): assume the conventional layout.
        base = root / "sys/fs/cgroup"
        if (base / "cgroup.controllers").exists():
            found[2] = ("/", base)
        if (base / controller).is_dir():
            found[1] = ("/", base / controller)
        if (base / "unified/cgroup.controllers").exists():
            found.setdefault(2, ("/", base / "unified"))
        return found
    for line in text.splitlines():
        # id parent major:minor root mount-point options [optional...] - fstype source super
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2" and 2 not in found:
            found[2] = (mount_root, under(root, mount_point))
        elif tail[0] == "cgroup" and controller in tail[2].split(",") and 1 not in found:
            found[1] = (mount_root, under(root, mount_point))
    return found


def _unescape(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes (\040).
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


_OCTAL = re.compile(r"\\([0-7]{3})")


def locate_cgroup(
    root: str | os.PathLike[str] = "/", version: int = 2, controller: str = "memory"
) -> CgroupLocation | None:
    """Find this process's cgroup directory in the v2 hierarchy or the v1 hierarchy of
    ``controller``.

    The path in ``/proc/self/cgroup`` is relative to the hierarchy's root, and the mount may
    show only part of the hierarchy (mountinfo's ``root`` field); the directory is the mount
    point plus the path below the mounted part. When that directory does not exist (a cgroup
    namespace, or a container runtime that mounts only its own cgroup) the mount point itself
    is the process's cgroup. ``None`` when the hierarchy is not mounted.
    """
    base = Path(root)
    mount = _mounts(base, controller).get(version)
    if mount is None:
        return None
    mount_root, mount_point = mount
    cgroup_path = None
    for line in (read_text(base / "proc/self/cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        v2_line = hierarchy == "0" and controllers == ""
        if (version == 2 and v2_line) or (version == 1 and controller in controllers.split(",")):
            cgroup_path = path
    directory = mount_point
    if cgroup_path is not None:
        rel = cgroup_path
        if mount_root != "/" and (rel == mount_root or rel.startswith(mount_root + "/")):
            rel = rel[len(mount_root) :]
        candidate = under(mount_point, rel)
        if ".." not in Path(rel).parts and candidate.is_dir():
            directory = candidate
    if not directory.is_dir():
        return None
    return CgroupLocation(version=version, path=directory, mount=mount_point)
