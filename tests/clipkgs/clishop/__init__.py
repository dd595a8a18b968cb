# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
"""A small shop for the mycelium-mono command's tests: messages, handlers, routing modules."""
