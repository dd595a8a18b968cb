"""A small shop for the mycelium-mono command's tests: messages, handlers, routing modules."""
