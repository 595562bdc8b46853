"""The connector conformance kit, run against the Example MIS sandbox through the real extract engine."""
from portal.testing.conformance import *  # noqa: F401,F403 (the kit's tests)
