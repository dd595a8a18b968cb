"""mycelium-mono: message passing as cheap as a direct function call."""

__version__ = "0.1.0"
