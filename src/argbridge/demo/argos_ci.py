"""The demo's Argos CI: a project whose builds move on every tick (``argos-ci`` profile).

Owns :class:`ArgosCIStandIn`, a loopback stand-in for ``GET /v2/project/builds``
(``argos-ci-api.txt``: bearer project token, ``page``/``perPage`` pagination,
``{"pageInfo", "results"}``), whose builds go ``pending`` → ``progress`` → ``complete``
with a ``success`` or (every third build) ``failure`` conclusion. The daemon's
``argos-ci`` source polls it like the real API; the failed builds reach the Slack
console in red with their link. :meth:`ArgosCIStandIn.tick` (pure state) is what the
tests drive; :meth:`ArgosCIStandIn.run` ticks on an interval.
"""

from __future__ import annotations

import secrets
from typing import Any

import anyio

from argbridge.http.asgi import Request, Response, Router, json_response, problem

PATH = "/v2/project/builds"
_STEPS = ("pending", "progress", "complete")


class ArgosCIStandIn:
    """See the module docstring."""

    def __init__(self, token: str | None = None, *, keep: int = 20) -> None:
        self.token = token or "argos_demo_" + secrets.token_hex(12)
        self.keep = keep
        #: Newest first, as Argos lists them.
        self.builds: list[dict[str, Any]] = []
        self._number = 0
        self.requests = 0
        self.router = Router()
        self.router.add("GET", PATH, self._list)

    def tick(self) -> None:
        """Move every unfinished build one step on and open a new one."""
        for build in self.builds:
            if build["status"] != "complete":
                build["status"] = _STEPS[_STEPS.index(build["status"]) + 1]
                if build["status"] == "complete":
                    build["conclusion"] = "failure" if build["number"] % 3 == 0 else "success"
        self._number += 1
        n = self._number
        self.builds.insert(
            0,
            {
                "id": f"bld_{n:05d}",
                "number": n,
                "name": "default",
                "status": "pending",
                "conclusion": None,
                "url": f"https://app.argos-ci.com/demo/web/builds/{n}",
                "head": {"sha": f"{n * 7919:040x}", "branch": "main"},
            },
        )
        del self.builds[self.keep :]

    async def run(self, interval: float) -> None:
        while True:
            self.tick()
            await anyio.sleep(interval)

    async def _list(self, request: Request) -> Response:
        self.requests += 1
        if request.header("authorization") != f"Bearer {self.token}":
            return problem(401, "Unauthorized", "the token is missing or invalid")
        query = request.query
        try:
            page = int(query.get("page", ["1"])[-1])
            per_page = int(query.get("perPage", ["30"])[-1])
        except ValueError:
            return problem(400, "Bad Request", "page and perPage must be integers")
        start = (max(page, 1) - 1) * per_page
        return json_response(
            {
                "pageInfo": {"total": len(self.builds), "page": page, "perPage": per_page},
                "results": self.builds[start : start + per_page],
            }
        )
