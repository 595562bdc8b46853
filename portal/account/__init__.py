"""A user's own account: correcting name and email (R49) and the marketing preference with its opt-out (R52)."""
