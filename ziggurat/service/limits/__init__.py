"""Rate limits and token quotas: who may start a generation now, and what it costs them.

`policy.py` says which limits apply (a `LimitSubject` becomes `Bucket`s),
`memory.py` and `redis.py` keep the counts (the Redis one exact across gateway
replicas, one Lua script per admission), `ticket.py` follows one admitted
generation to its end (real token usage, the concurrency slot) and
`headers.py` turns the state into the `x-ratelimit-*` headers OpenAI clients
read. Nothing here knows principals or roles' storage: the application builds
the subject.
"""
