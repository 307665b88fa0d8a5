"""Sink drivers: the I/O that delivers journaled events to destinations."""
