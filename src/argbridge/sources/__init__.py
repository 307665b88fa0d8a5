"""Source drivers: the I/O that reads upstream feeds into the journal."""
