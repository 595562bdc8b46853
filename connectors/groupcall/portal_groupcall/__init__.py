"""portal-groupcall: the Groupcall Xporter on Demand connector for the MIS connection portal."""

__version__ = "0.1.0"
