"""An example connector package for the MIS connection portal: a fictional MIS API, its sandbox and its connector."""
from __future__ import annotations

__version__ = "0.1.0"
