"""Oversight: support access grants (R58), school-approved links (R57), the sub-processor register (R66), breach records
(R69) and freshness alerts (R22)."""
