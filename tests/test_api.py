"""The public surface: everything public is in ``__all__`` and reports itself as buttress.X."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import buttress


def test_all_names_exist_and_are_sorted() -> None:
    for name in buttress.__all__:
        assert hasattr(buttress, name), name
    assert list(buttress.__all__) == sorted(buttress.__all__)


def test_public_classes_report_the_package_as_their_module() -> None:
    for name in buttress.__all__:
        obj = getattr(buttress, name)
        if isinstance(obj, type):
            assert obj.__module__ == "buttress", name


def test_no_public_name_is_left_out_of_all() -> None:
    public = {
        n
        for n in dir(buttress)
        if not n.startswith("_") and not isinstance(getattr(buttress, n), types.ModuleType)
    }
    assert public - set(buttress.__all__) == set()


# What `import buttress` must not import: configuration's pydantic until configuration is used,
# and the optional libraries (extras) until their part is.
HEAVY = (
    "pydantic",
    "redis",
    "psycopg",
    "psycopg_pool",
    "asyncpg",
    "sqlalchemy",
    "prometheus_client",
    "opentelemetry",
    "rich",
    "psutil",
    "httpx",  # buttress.integrations' clients
    "requests",
)


def test_importing_buttress_imports_no_optional_or_heavy_library() -> None:
    """Checked in a fresh interpreter: this one has imported everything the tests use."""
    script = f"""
import sys
import buttress, buttress.events, buttress.http, buttress.ratelimit, buttress.testing
import buttress.exporters, buttress.integrations
heavy = {HEAVY!r}
print(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy)))
buttress.Config  # configuration, on first use, brings pydantic
print("pydantic" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == ["[]", "True"]


def test_configuration_names_resolve_lazily_as_public_names() -> None:
    assert {"Config", "load_config"} <= set(dir(buttress))
    assert buttress.Config.__module__ == "buttress"
    assert isinstance(buttress.load_config({}, env={}), buttress.Config)
    with pytest.raises(AttributeError, match="'Confg'"):
        buttress.Confg  # noqa: B018


def test_error_tree() -> None:
    assert issubclass(buttress.CircuitOpenError, buttress.RejectedError)
    assert issubclass(buttress.LoadShedError, buttress.RejectedError)
    assert issubclass(buttress.RateLimitExceeded, buttress.RejectedError)
    assert issubclass(buttress.PoolTimeoutError, buttress.RejectedError)
    for cls in (
        buttress.RejectedError,
        buttress.ConfigError,
        buttress.ContextError,
        buttress.PoolClosedError,
        buttress.InfrastructureClosedError,
        buttress.BackendError,
        buttress.InjectedFault,
    ):
        assert issubclass(cls, buttress.ButtressError)
    # A request's missing id is a ValueError (a client error), distinct from a config mistake.
    assert issubclass(buttress.ContextError, ValueError)
    assert not issubclass(buttress.ContextError, buttress.ConfigError)
    err = buttress.RateLimitExceeded("org", key="o1", limit=100, retry_after=1.5)
    assert (err.scope, err.key, err.limit, err.retry_after) == ("org", "o1", 100, 1.5)
    assert "org" in str(err) and "1.500" in str(err)


# The names an application writes: changing this list changes the public API.
PUBLIC = [
    "AdaptiveConcurrency",
    "AdaptiveSnapshot",
    "AsyncConnectionPool",
    "AsyncLease",
    "AsyncScheduler",
    "Attempt",
    "BackendError",
    "Backoff",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadPermit",
    "BulkheadSnapshot",
    "ButtressError",
    "CallTimeoutError",
    "Chaos",
    "ChaosSchedule",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ComponentCheck",
    "Config",
    "ConfigError",
    "ConnectionPool",
    "ContextError",
    "CpuMonitor",
    "CpuProbe",
    "CpuReading",
    "CpuSnapshot",
    "DashboardApp",
    "Decision",
    "DegradationLevel",
    "Experiment",
    "FaultInjector",
    "FaultSettings",
    "FleetStatus",
    "HealthReport",
    "Infrastructure",
    "InfrastructureClosedError",
    "InjectedFault",
    "Lease",
    "Leasing",
    "LoadShedError",
    "LoopLagMonitor",
    "LoopLagMonitors",
    "LoopLagSnapshot",
    "ManualClock",
    "MemoryBackend",
    "MemoryLevel",
    "MemoryManager",
    "MemoryReading",
    "MemorySample",
    "MemorySnapshot",
    "OverrideStatus",
    "Permit",
    "PoolClosedError",
    "PoolConfig",
    "PoolSnapshot",
    "PoolTimeoutError",
    "PressureLevel",
    "Protection",
    "Psi",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterSnapshot",
    "RedisBackend",
    "RedisFleet",
    "RejectedError",
    "Reloaded",
    "ResourceSpec",
    "Retry",
    "RetryBudget",
    "RetryBudgetSnapshot",
    "SQLiteBackend",
    "Scheduler",
    "Scope",
    "ScopeSnapshot",
    "ScopeStatus",
    "ServiceLayers",
    "ServiceSnapshot",
    "SystemClock",
    "SystemProbe",
    "Transition",
    "__version__",
    "dashboard_app",
    "events",
    "health",
    "health_asgi_app",
    "health_response",
    "health_wsgi_app",
    "http",
    "load_config",
    "parse_retry_after",
    "remaining",
]

# The rate limiter's extension points: what a backend of one's own is made of.
RATELIMIT = [
    "ALGORITHMS",
    "FAILURE_POLICIES",
    "Algorithm",
    "Backend",
    "FailurePolicy",
    "FixedWindow",
    "Key",
    "MemoryBackendSnapshot",
    "Outcome",
    "SlidingWindow",
    "State",
    "TimeBase",
    "TokenBucket",
    "Verdict",
    "admit_all",
    "backend_from_url",
    "decide_all",
]

# Every module importable without an underscore in its name: each is documented.
PUBLIC_MODULES = {
    "buttress",
    "buttress.events",
    "buttress.exporters",
    "buttress.exporters.otel",
    "buttress.exporters.prometheus",
    "buttress.http",
    "buttress.integrations",
    "buttress.integrations.aiohttp",
    "buttress.integrations.asgi",
    "buttress.integrations.asyncpg",
    "buttress.integrations.celery",
    "buttress.integrations.django",
    "buttress.integrations.fastapi",
    "buttress.integrations.flask",
    "buttress.integrations.httpx",
    "buttress.integrations.logging",
    "buttress.integrations.psycopg_pool",
    "buttress.integrations.requests",
    "buttress.integrations.sqlalchemy",
    "buttress.integrations.structlog",
    "buttress.ratelimit",
    "buttress.testing",
    "buttress.testing.pytest_plugin",
}

SRC = Path(buttress.__file__).parent


def test_the_public_names_are_pinned() -> None:
    assert buttress.__all__ == PUBLIC


def test_the_extension_points_are_pinned() -> None:
    import buttress.ratelimit

    assert buttress.ratelimit.__all__ == RATELIMIT
    for name in RATELIMIT:
        assert hasattr(buttress.ratelimit, name), name
    # (pytest's assertion rewriting adds "@py_..." names to every module of a plugin's package)
    public = {n for n in vars(buttress.ratelimit) if not n.startswith(("_", "@"))}
    assert public - set(RATELIMIT) == set()


def test_only_the_documented_modules_are_public() -> None:
    found = {"buttress"}
    for info in pkgutil.walk_packages(buttress.__path__, "buttress."):
        parts = info.name.split(".")[1:]
        if not any(p.startswith("_") for p in parts):
            found.add(info.name)
    assert found == PUBLIC_MODULES


def _package_of(module: str) -> str:
    """The package a module of buttress belongs to: ``buttress._breaker`` for its modules,
    the module itself for a top-level one."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out.append((name, ast.parse(path.read_text(), str(path))))
    return out


def _absolute(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def test_no_private_name_crosses_a_package() -> None:
    """A name with a leading underscore is its package's own: no other package imports it,
    nor reads it off a module it imported (``events._by_name``)."""
    crossings: list[str] = []
    for name, tree in _modules():
        is_package = (SRC.parent / name.replace(".", "/") / "__init__.py").exists()
        home = _package_of(name)
        imported_modules: dict[str, str] = {}  # local name -> module, for modules imported
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _absolute(name, is_package, node)
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if _is_module(target):
                    imported_modules[alias.asname or alias.name] = target
                if _package_of(source) == home or not source.startswith("buttress"):
                    continue
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    crossings.append(f"{name}: from {source} import {alias.name}")
        crossings.extend(
            f"{name}: {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in imported_modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and _package_of(imported_modules[node.value.id]) != home
        )
    assert crossings == []


def _is_module(name: str) -> bool:
    if not name.startswith("buttress"):
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a name inside a module, not a module
        return False
