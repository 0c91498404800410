"""The recipe and the compression plan: what a user writes."""
