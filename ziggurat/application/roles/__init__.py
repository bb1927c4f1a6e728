"""Roles: the built-in `user` and `admin`, plus custom roles stored in the database.

A role grants permissions (`chat`, `admin`), the models its users may use
(`*` for all) and quotas that the service layer enforces. The authenticator
turns a user's role into the `Principal` once per credential check.
"""
