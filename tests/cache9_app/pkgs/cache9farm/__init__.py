"""A smart farm: soil sensors report, a planner decides to irrigate, valves open."""
