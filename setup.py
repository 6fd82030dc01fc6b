"""The one thing pyproject.toml cannot say: the optional compiled fast path.

``optional=True``: where the C file does not compile (no compiler, an unusual platform), the
build goes on and buttress runs on its pure-Python path (see docs/performance.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "buttress.ratelimit._speedups",
            ["src/buttress/ratelimit/_speedups.c"],
            optional=True,
        )
    ]
)
