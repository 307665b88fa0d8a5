"""Configuration: pydantic-settings models loaded from one TOML file plus ``ARGBRIDGE_`` env.

See :mod:`argbridge.config.settings` for the tree and :func:`load_settings`.
"""

from argbridge.config.settings import Settings, format_errors, load_settings

__all__ = ["Settings", "format_errors", "load_settings"]
