"""The audit log: an append-only record of security and admin events, for administrators."""
