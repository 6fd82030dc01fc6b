"""httpx transports that protect every request: a breaker per host or per service, a retry
that honours ``Retry-After``, an outbound rate limit, the call's deadline as the timeout.

>>> transport = ProtectedTransport(breaker=bt.CircuitBreaker("api"))  # doctest: +SKIP
>>> client = httpx.Client(transport=transport)  # doctest: +SKIP

:class:`ProtectedTransport` (for ``httpx.Client``) and :class:`AsyncProtectedTransport` (for
``httpx.AsyncClient``) wrap an inner transport (by default ``httpx.HTTPTransport()`` /
``httpx.AsyncHTTPTransport()``). How a request is protected is ``_outbound.py``'s docstring;
docs/integrations/httpx.md shows it at work.
"""

from __future__ import annotations

from ._httpx import ProtectedTransport
from ._httpx_async import AsyncProtectedTransport
from ._outbound import ErrorResponse

__all__ = ["AsyncProtectedTransport", "ErrorResponse", "ProtectedTransport"]
