"""Pure delivery logic for sinks: record/payload building, signing, retry policy (no I/O)."""
