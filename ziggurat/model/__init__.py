"""Model layer: pure inference behind one `Engine` interface.

Knows nothing of HTTP, users, databases, queues or the settings object.
"""
