# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
"""One routing module per error code; the offending line ends with `# error here`."""
