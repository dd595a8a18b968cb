"""A tiny shop: two messages, two handlers, one routing module, one plain module."""
