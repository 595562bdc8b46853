"""The connector conformance kit, run against the Wonde sandbox through the real extract engine (SQLite and PostgreSQL)."""
from portal.testing.conformance import *  # noqa: F401,F403 (the kit's tests)
