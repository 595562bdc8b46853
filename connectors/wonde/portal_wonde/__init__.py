"""The Wonde connector package for the MIS connection portal."""
from __future__ import annotations

__version__ = "0.1.0"
