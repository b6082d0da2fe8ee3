"""The composition root: settings, the `jobbot` CLI and the one aiohttp server."""
