"""A warehouse: goods come in, orders are picked, low stock is reordered from a supplier."""
