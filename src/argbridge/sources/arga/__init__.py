"""The ``arga`` source: Arga validation runs (results SSE) and demo runs (WebSocket).

Modules: :mod:`.source` (the source: followed runs, stream cap, start/follow),
:mod:`.results` and :mod:`.demorun` (the two transports on the shared
:mod:`argbridge.sources.follower` skeleton), :mod:`.discovery` (listing polls),
:mod:`.refusals` (refused or missing runs: the alert on the run, remembered per key, and
whether the key itself is refused) and :mod:`.api` (the narrow API view the followers
get).
"""

from argbridge.sources.arga.source import ArgaSource, FollowedRun

__all__ = ["ArgaSource", "FollowedRun"]
