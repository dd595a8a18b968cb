"""A hospital ward: vitals readings -> triage -> pager alerts -> audit log."""
