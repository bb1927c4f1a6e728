"""Conversations and their messages: storage, ownership, and chatting through the model."""
