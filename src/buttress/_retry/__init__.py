"""Retries: backoff and retry budgets (pure cores; the `Retry` shell is still to come). Private:
public names come through ``buttress``."""
