"""Terminal output of the demo: one writer for Slack messages, summaries and notices.

Colour (ANSI) only on a TTY and when ``NO_COLOR`` is unset; otherwise plain text, one
flushed line at a time, so the output is readable in a pipe, a log file or CI.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

RESET = "\x1b[0m"
ANSI = {
    "red": "\x1b[31m",
    "amber": "\x1b[33m",
    "blue": "\x1b[34m",
    "green": "\x1b[32m",
    "grey": "\x1b[90m",
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "cyan": "\x1b[36m",
}


class Console:
    """Writes whole blocks of lines to ``stream`` (stdout by default)."""

    def __init__(self, stream: TextIO | None = None, *, colour: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        if colour is None:
            isatty = getattr(self.stream, "isatty", None)
            colour = bool(isatty and isatty()) and "NO_COLOR" not in os.environ
        self.colour = colour

    def style(self, text: str, *styles: str) -> str:
        if not self.colour or not styles:
            return text
        return "".join(ANSI[s] for s in styles if s in ANSI) + text + RESET

    def write(self, lines: list[str] | str) -> None:
        text = lines if isinstance(lines, str) else "\n".join(lines)
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader went away (| head) or the stream is closed: keep running
