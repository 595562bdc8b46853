"""The connector conformance kit, run against the Groupcall sandbox (provider fixture in conftest.py)."""
from portal.testing.conformance import *  # noqa: F401,F403
