"""Data-subject requests: register, deadline clock, subject search, export, rectification, erasure, restriction (R43–R53)."""
