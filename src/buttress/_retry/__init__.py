"""Retries: backoff, budgets and the ``Retry`` policy. Private: public names come through
``buttress``."""

from ._backoff import Backoff
from ._budget import RetryBudget, RetryBudgetSnapshot
from ._core import Attempt
from ._retry import Retry
from ._retry_after import parse_retry_after

__all__ = ["Attempt", "Backoff", "Retry", "RetryBudget", "RetryBudgetSnapshot", "parse_retry_after"]
