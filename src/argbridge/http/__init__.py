"""The daemon's one HTTP listener: a lean raw-ASGI app embedded with uvicorn."""
