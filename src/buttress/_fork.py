"""What a forked child must not share with its parent, and the one hook that sees to it.

A process made by ``os.fork()`` (``gunicorn --preload``, Celery's prefork pool,
``multiprocessing`` with the ``fork`` start method) starts as a copy of its parent with one
thread: the one that forked. Everything else the copy holds still points at the parent's world:

* sockets and connections are the parent's: using one from the child mixes both processes'
  traffic on one stream, and closing one there closes it for the parent too (a PostgreSQL
  ``Terminate`` on a socket the parent still uses);
* threads are gone (a scheduler's thread, workers), while the objects that describe them say
  they run;
* a lock that another thread held at the fork stays held for ever: its holder does not exist.

So every object that holds such things registers a method with :func:`call_in_forked_child`,
which the child calls right after the fork (``os.register_at_fork``), and the locks that any
thread may hold are made by :func:`fork_safe_lock` / :func:`fork_safe_rlock`, which the child
makes new again (unlocked) before any of those methods runs. Both are held weakly: registering
never keeps an object alive. The parent does nothing at a fork.

The SQLite backend needs none of this: it keeps a connection per thread and process and checks
the process id when it takes one (see ``ratelimit/_sqlite.py``).
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._redact import redacted_logger

__all__ = ["call_in_forked_child", "fork_safe_lock", "fork_safe_rlock", "reseed_in_child"]

_log = redacted_logger("buttress.fork")

# Registration order is the order they run in: a scheduler is always made before the pools
# and jobs that use it, so it is ready again when they ask it for work.
# Each hook is the object, weakly, and its method's function. Not a WeakMethod: at interpreter
# exit its callback can run after the WeakMethod itself was cleared, and print an
# "Exception ignored" traceback from the standard library's weakref module (Python 3.11).
_hooks: dict[int, tuple[weakref.ref[Any], Callable[[Any], None]]] = {}
_ids = itertools.count()
_locks: weakref.WeakSet[Any] = weakref.WeakSet()


def call_in_forked_child(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every child forked from now on (while its object lives)."""
    key = next(_ids)

    # When the object goes: a dict pop, safe from any thread. The dict is bound here, not
    # looked up: at interpreter exit this module's globals may already be gone (None).
    def forget(_ref: object, hooks: dict[int, Any] = _hooks) -> None:
        hooks.pop(key, None)

    owner = method.__self__  # type: ignore[attr-defined]
    _hooks[key] = (weakref.ref(owner, forget), method.__func__)  # type: ignore[attr-defined]


def fork_safe_lock() -> threading.Lock:
    """A ``threading.Lock`` that a forked child gets back unlocked."""
    made = threading.Lock()
    _locks.add(made)
    return made


def fork_safe_rlock() -> threading.RLock:
    """A ``threading.RLock`` that a forked child gets back unlocked."""
    made = threading.RLock()
    _locks.add(made)
    return made


def reseed_in_child(rng: random.Random) -> None:
    """Move a copied ``rng`` (in a child) to a sequence of its own: siblings forked from one
    parent would otherwise draw the same jitter, and do together what jitter spreads out."""
    rng.seed(rng.getrandbits(64) ^ os.getpid())


def _after_fork_in_child() -> None:
    # Only this thread exists here: nothing else can take a lock or register meanwhile.
    for held in list(_locks):
        held._at_fork_reinit()  # what the standard library does with its own locks
    for ref, func in list(_hooks.values()):
        owner = ref()
        if owner is None:
            continue
        try:
            func(owner)
        except Exception:  # one component's trouble must not leave the others unprepared
            _log.exception("after fork (pid %d): %r of %r failed", os.getpid(), func, owner)


os.register_at_fork(after_in_child=_after_fork_in_child)
