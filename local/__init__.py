"""Local mode: the whole system on one machine with no AWS account."""
