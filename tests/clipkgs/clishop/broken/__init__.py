"""One routing module per error code; the offending line ends with `# error here`."""
