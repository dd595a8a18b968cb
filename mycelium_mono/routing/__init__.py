"""The compile-time path: routing module → parse → resolve → check → generate → cache → load."""
