"""The public surface: everything public is in ``__all__`` and reports itself as buttress.X."""

from __future__ import annotations

import types

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


def test_error_tree() -> None:
    assert issubclass(buttress.CircuitOpenError, buttress.RejectedError)
    assert issubclass(buttress.LoadShedError, buttress.RejectedError)
    assert issubclass(buttress.RateLimitExceeded, buttress.RejectedError)
    assert issubclass(buttress.PoolTimeoutError, buttress.RejectedError)
    for cls in (
        buttress.RejectedError,
        buttress.ConfigError,
        buttress.PoolClosedError,
        buttress.InfrastructureClosedError,
        buttress.BackendError,
        buttress.InjectedFault,
    ):
        assert issubclass(cls, buttress.ButtressError)
    err = buttress.RateLimitExceeded("org", key="o1", limit=100, retry_after=1.5)
    assert (err.scope, err.key, err.limit, err.retry_after) == ("org", "o1", 100, 1.5)
    assert "org" in str(err) and "1.500" in str(err)
