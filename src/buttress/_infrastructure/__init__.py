"""The integrated layer: every component of a namespace built from one config, ``protect()``.

* ``_infrastructure.py``: the facade, :class:`Infrastructure` (lifecycle, calls, health);
* ``_build.py``: config → breakers, limiters, pools, memory manager, and each service's route;
* ``_protect_async.py``: the pipeline, the order of the layers (``_protect.py`` is its
  generated thread twin); ``_misuse.py``: the errors for calls made the wrong way.
"""

from ._build import ResourceSpec, ServiceLayers
from ._infrastructure import Infrastructure, Protection, Reloaded
from ._registry import health

__all__ = ["Infrastructure", "Protection", "Reloaded", "ResourceSpec", "ServiceLayers", "health"]
