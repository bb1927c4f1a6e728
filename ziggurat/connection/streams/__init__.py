"""Token streams back from workers: in-process by default, Redis Streams across processes."""
