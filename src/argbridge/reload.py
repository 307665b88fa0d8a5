"""Live reload, the pure part: what changed between two configurations, and the identity
of a loaded config file (hash, load time). The runtime applies a :class:`ConfigDiff`
(:meth:`argbridge.runtime.App.reload`).

Reloadable: sources, sinks and routes (``routes``, ``ops``) added, removed or changed —
secret references are resolved again by the load, so a rotated secret shows up as a
changed component and is rebuilt. Everything else (``state_dir``, ``http``, ``journal``,
``runtime``, ``log``, ``instance``, ``type_prefix``) needs a restart: a reload keeps the
running values of those and says which keys were left (:attr:`ConfigDiff.needs_restart`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argbridge.config.settings import Settings

#: Top-level keys a reload cannot apply (they shape the process, the journal or the
#: listener); changing them needs a restart.
RESTART_KEYS = (
    "state_dir",
    "http",
    "journal",
    "runtime",
    "log",
    "instance",
    "type_prefix",
    "cluster",
)


@dataclass(frozen=True, slots=True)
class Changes:
    """Names added, removed and changed (same name, different config) in one section."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, list[str]]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
        }


def _changes(old: dict[str, Any], new: dict[str, Any]) -> Changes:
    return Changes(
        added=tuple(n for n in new if n not in old),
        removed=tuple(n for n in old if n not in new),
        changed=tuple(n for n in new if n in old and old[n] != new[n]),
    )


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    sources: Changes
    sinks: Changes
    routes_changed: bool
    #: Keys whose new value is ignored until a restart.
    needs_restart: tuple[str, ...] = field(default=())

    @property
    def any(self) -> bool:
        return self.sources.any or self.sinks.any or self.routes_changed

    def to_json(self) -> dict[str, Any]:
        return {
            "sources": self.sources.to_json(),
            "sinks": self.sinks.to_json(),
            "routes_changed": self.routes_changed,
            "needs_restart": list(self.needs_restart),
        }


def effective(old: Settings, new: Settings) -> tuple[Settings, tuple[str, ...]]:
    """``new`` with the restart-only keys kept at their running values, and those keys."""
    kept = tuple(k for k in RESTART_KEYS if getattr(old, k) != getattr(new, k))
    if not kept:
        return new, ()
    return new.model_copy(update={k: getattr(old, k) for k in kept}), kept


def diff(old: Settings, new: Settings, needs_restart: tuple[str, ...] = ()) -> ConfigDiff:
    """What a reload from ``old`` to ``new`` (already :func:`effective`) changes."""
    return ConfigDiff(
        sources=_changes(dict(old.sources), dict(new.sources)),
        sinks=_changes(dict(old.sinks), dict(new.sinks)),
        routes_changed=old.routes != new.routes or old.ops != new.ops,
        needs_restart=needs_restart,
    )


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """The running configuration's file, its SHA-256 and when it was loaded."""

    path: str | None
    sha256: str
    loaded_at: float

    @classmethod
    def of(cls, path: str | Path | None, loaded_at: float) -> LoadedConfig:
        digest = ""
        if path is not None:
            try:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError:
                digest = ""
        return cls(str(path) if path is not None else None, digest, loaded_at)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "loaded_at": self.loaded_at}
