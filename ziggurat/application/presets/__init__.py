"""Presets: named parameter sets (system prompt, model, temperature, max_tokens) a user keeps for chats."""
