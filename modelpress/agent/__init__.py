"""Profiling on the real device: a small authenticated agent (`modelpress agent serve`) and its client.

The server needs the `agent` extra (aiohttp); the client, the targets file and the energy counters use the
standard library only, so `modelpress profile --target` works from any install.
"""
