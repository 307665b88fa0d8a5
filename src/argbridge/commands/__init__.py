"""Command groups of the ``argbridge`` CLI beyond run/check-config/version."""
