"""The aiohttp side of IDWall: app wiring, API handlers, pages, the TLS server."""
