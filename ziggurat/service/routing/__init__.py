"""Routing: model aliases, fallback chains, retries with backoff, and the gateway's timeouts.

`policy.py` holds what the operator configured, `attempts.py` runs one
request's attempts, and `fallback.py` reads them with the interface of a
plain generation stream.
"""
