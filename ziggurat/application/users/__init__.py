"""User accounts: registration, roles and lookup. Credentials checks live in `auth/`."""
