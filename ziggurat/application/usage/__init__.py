"""Token usage: one row per generation, written in batches, reported per user and per model by day."""
