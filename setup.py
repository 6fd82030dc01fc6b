"""The one thing pyproject.toml cannot say: the optional compiled fast path.

``optional=True``: where the C file does not compile (no compiler, an unusual platform), the
build goes on and buttress runs on its pure-Python path (docs/rate-limiting.md, "The compiled
fast path"). It is not built for other interpreters than CPython, nor for free-threaded
CPython, where the pure-Python path runs anyway.
"""

import sys
import sysconfig

from setuptools import Extension, setup

compiled = sys.implementation.name == "cpython" and not sysconfig.get_config_var("Py_GIL_DISABLED")

setup(
    ext_modules=[
        Extension(
            "buttress.ratelimit._speedups",
            ["src/buttress/ratelimit/_speedups.c"],
            optional=True,
        )
    ]
    if compiled
    else []
)
