"""What plugins import: the ``hookimpl`` marker (and the façade for the core)."""
from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("portal")

__all__ = ["hookimpl"]
