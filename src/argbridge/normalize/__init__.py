"""Pure normalisers: upstream payloads → CloudEvents (no I/O)."""
