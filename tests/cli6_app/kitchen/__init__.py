"""A kitchen order board: orders go to the grill, dishes to the pass, both to the board."""
