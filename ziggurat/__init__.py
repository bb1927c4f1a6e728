"""ziggurat: a self-hosted chat platform for serving your own fine-tuned LLM.

The package is laid out by layer (model, connection, service, application); see
docs/architecture.md. Importing it has no side effects.
"""

__version__ = "0.1.0"
