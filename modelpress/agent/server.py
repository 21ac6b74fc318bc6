"""`modelpress agent serve`: a small aiohttp server that profiles models on the device it runs on.

Protocol (every request carries `Authorization: Bearer TOKEN`; every refusal is JSON {"error": "..."}):
  GET  /v1/info                      device facts, limits, jobs running/queued
  HEAD /v1/{models|data}/{sha256}    200 when the agent has it (so the same model is sent once), else 404
  PUT  /v1/{models|data}/{sha256}    upload; stored only when the body hashes to the sha256 and fits the limit
  POST /v1/profile                   JSON job -> NDJSON stream: {"status": "queued"|"running", ...} lines
                                     (heartbeats), then one {"result": {...}} or {"error": "..."} line

The job runs the same profiler as `modelpress profile` (modelpress.benchmarks.profiler.profile_model: a fresh
pinned child per profile), one job at a time; at most `queue` more wait, the rest get 429 "busy".
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpress.agent.jobs import JobSpec, parse_job, run_job
from modelpress.agent.store import (
    BlobStore, TooLarge, default_state_dir, load_or_create_token, lock_state_dir, token_matches,
)
from modelpress.errors import ModelpressError, first_line

API = "/v1"
HEARTBEAT_S = 2.0
_JSON_LIMIT = 64 << 10  # a job description is a few hundred bytes


@dataclass
class AgentConfig:
    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port (printed at start)
    token_file: Path | None = None  # default: STATE_DIR/token
    state_dir: Path = field(default_factory=default_state_dir)
    max_upload_mb: float = 512.0
    ttl_s: float = 3600.0  # a model or data file unused this long is deleted
    queue: int = 2  # jobs that may wait behind the running one; more get 429 busy
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def check(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ModelpressError(f"--port must be 0 to 65535, got {self.port}")
        if self.max_upload_mb <= 0 or self.ttl_s <= 0 or self.queue < 0:
            raise ModelpressError("--max-upload-mb and --ttl-s must be > 0 and --queue >= 0")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ModelpressError("give both --tls-cert and --tls-key, or neither")
        for p in (self.tls_cert, self.tls_key):
            if p is not None and not Path(p).is_file():
                raise ModelpressError(f"no such file: {p}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1e6)


def _error(status: int, message: str, **extra: Any):
    from aiohttp import web

    return web.json_response({"error": message, **extra}, status=status)


class Agent:
    """The server's state: token, store, the one-job lock and the queue count."""

    def __init__(self, cfg: AgentConfig, token: str) -> None:
        from modelpress.agent.facts import device_facts

        self.cfg, self.token = cfg, token
        self.store = BlobStore(Path(cfg.state_dir).expanduser() / "store")
        self.store.clear_incoming()
        self.lock = asyncio.Lock()
        self.running, self.waiting, self.jobs_done = 0, 0, 0
        self.facts = device_facts()

    # ------------------------------------------------------------------ middleware

    async def guard(self, request, handler):
        """Bearer token first (constant time), then turn every HTTP error into one JSON line."""
        from aiohttp import web

        auth = request.headers.get("Authorization", "")
        scheme, _, given = auth.partition(" ")
        if not auth:
            return _error(401, "no bearer token: send `Authorization: Bearer TOKEN` (the agent's token file)")
        if scheme.lower() != "bearer" or not token_matches(given.strip(), self.token):
            return _error(401, "token rejected by the agent (wrong token)")
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _error(e.status, f"{e.reason}: {request.method} {request.path[:100]}")

    # ------------------------------------------------------------------ handlers

    async def info(self, request):
        from aiohttp import web

        from modelpress.agent.facts import thermal

        return web.json_response({
            "agent": "modelpress", "api": 1, "device": {**self.facts, "thermal": thermal()},
            "limits": {"max_upload_bytes": self.cfg.max_upload_bytes, "queue": self.cfg.queue, "ttl_s": self.cfg.ttl_s},
            "jobs": {"running": self.running, "queued": self.waiting, "done": self.jobs_done},
            "uploads": self.store.uploads,
        })

    async def head_blob(self, request):
        from aiohttp import web

        kind, sha = request.match_info["kind"], request.match_info["sha"]
        return web.Response(status=200 if self.store.has(kind, sha) else 404)

    async def put_blob(self, request):
        from aiohttp import web

        kind, sha = request.match_info["kind"], request.match_info["sha"]
        limit = self.cfg.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(413, f"upload of {request.content_length / 1e6:.1f} MB is over the agent's limit of "
                               f"{limit / 1e6:g} MB (--max-upload-mb)")
        if self.store.has(kind, sha):
            return web.json_response({"stored": False, "sha256": sha}, status=200)
        try:
            with self.store.receiving(kind, sha, limit) as rx:
                async for chunk in request.content.iter_chunked(1 << 20):
                    rx.write(chunk)
        except TooLarge as e:
            return _error(413, str(e))
        except ModelpressError as e:
            return _error(400, str(e))
        return web.json_response({"stored": True, "sha256": sha, "size": rx.size}, status=201)

    async def profile(self, request):
        from aiohttp import web

        if request.content_length is not None and request.content_length > _JSON_LIMIT:
            return _error(413, "job description too large")
        try:
            spec = parse_job(await request.json())
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the job is not valid JSON")
        except ModelpressError as e:
            return _error(400, str(e))
        for kind, sha in (("models", spec.model), ("models", spec.interleave), ("data", spec.inputs)):
            if sha is not None and not self.store.has(kind, sha):
                return _error(404, f"{kind[:-1] if kind == 'models' else 'input data'} {sha[:12]}… is not on the "
                                   "agent (never uploaded, or deleted after its TTL): upload it first")
        if (self.running or self.waiting) and self.waiting >= self.cfg.queue:
            return _error(429, f"agent busy: {self.running} job running, {self.waiting} queued (the queue holds "
                               f"{self.cfg.queue}); try again later", busy=True)
        self.waiting += 1  # no await since the check above: check and count are one step
        self.store.pin(spec.model, spec.interleave, spec.inputs)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
        try:
            return await self._stream_job(request, resp, spec)
        finally:
            self.store.unpin(spec.model, spec.interleave, spec.inputs)

    async def _stream_job(self, request, resp, spec: JobSpec):
        """Wait for the device (queued heartbeats), run the job in a worker thread (running heartbeats), send
        its one result line. `self.waiting` was counted by the caller and is uncounted here, on every path."""
        t0 = time.perf_counter()
        gone = False

        async def send(obj: dict) -> None:
            nonlocal gone
            if gone:
                return
            try:
                await resp.write((json.dumps(obj) + "\n").encode())
            except (ConnectionError, RuntimeError):
                gone = True  # the client left; the job still finishes (it holds the device) but nobody reads it

        try:
            try:
                await resp.prepare(request)
            except (ConnectionError, RuntimeError):
                return resp  # the client left before the first byte
            acquire = asyncio.ensure_future(self.lock.acquire())
            ahead = self.running + self.waiting - 1
            if ahead:
                await send({"status": "queued", "ahead": ahead})
            while not acquire.done():
                await asyncio.wait({acquire}, timeout=HEARTBEAT_S)
                if not acquire.done():
                    await send({"status": "queued", "ahead": max(self.running + self.waiting - 1, 0)})
                    if gone:  # the client left while queued: give its place up
                        acquire.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await acquire
                        if not acquire.cancelled():
                            self.lock.release()  # it was granted just as the client left
                        return resp
        finally:
            self.waiting -= 1
        self.running = 1
        uploads_before = self.store.uploads
        try:
            await send({"status": "running", "queued_s": round(time.perf_counter() - t0, 3)})
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(None, run_job, spec, self.store, self.facts)
            t1 = time.perf_counter()
            while not job.done():
                await asyncio.wait({job}, timeout=HEARTBEAT_S)
                if not job.done():
                    await send({"status": "running", "elapsed_s": round(time.perf_counter() - t1, 1)})
            out = job.result()
            if "result" in out:
                out["result"]["timing"] = {"queued_s": round(t1 - t0, 3), "job_s": round(time.perf_counter() - t1, 3),
                                           "uploads_during_job": self.store.uploads - uploads_before}
            await send(out)
        finally:
            self.running = 0
            self.jobs_done += 1
            self.lock.release()
        if not gone:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await resp.write_eof()
        return resp

    async def sweeper(self) -> None:
        """Delete models and data unused for ttl_s (checked every min(ttl/4, 60) s)."""
        while True:
            removed = self.store.sweep(self.cfg.ttl_s)
            for name in removed:
                _log(f"deleted {name} (unused for {self.cfg.ttl_s:g} s)")
            await asyncio.sleep(max(min(self.cfg.ttl_s / 4, 60.0), 0.5))


def make_app(agent: Agent):
    from aiohttp import web

    @web.middleware
    async def guard(request, handler):
        return await agent.guard(request, handler)

    app = web.Application(middlewares=[guard], client_max_size=_JSON_LIMIT)
    blob = API + "/{kind:models|data}/{sha:[0-9a-f]{64}}"
    app.router.add_get(API + "/info", agent.info)
    app.router.add_route("HEAD", blob, agent.head_blob)
    app.router.add_put(blob, agent.put_blob)
    app.router.add_post(API + "/profile", agent.profile)
    return app


def _log(msg: str) -> None:
    print(f"modelpress agent: {msg}", file=sys.stderr, flush=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ssl_context(cfg: AgentConfig):
    if cfg.tls_cert is None:
        return None
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
    except (ssl.SSLError, OSError) as e:
        raise ModelpressError(f"cannot load --tls-cert/--tls-key: {first_line(e)}") from None
    return ctx


async def _serve(cfg: AgentConfig, token: str) -> None:
    from aiohttp import web

    agent = Agent(cfg, token)
    runner = web.AppRunner(make_app(agent), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=_ssl_context(cfg), shutdown_timeout=2.0)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ModelpressError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    port = runner.addresses[0][1] if runner.addresses else cfg.port
    scheme = "https" if cfg.tls_cert else "http"
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    _log(f"listening on {scheme}://{host}:{port} (models kept {cfg.ttl_s:g} s after last use, uploads up to "
         f"{cfg.max_upload_mb:g} MB, {cfg.queue} job(s) may queue)")
    if not _is_loopback(cfg.host) and scheme == "http":
        _log("warning: listening beyond this machine without TLS: the token and models cross the network in clear "
             "text; give --tls-cert/--tls-key or keep 127.0.0.1 and use an SSH tunnel")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(agent.sweeper())
    try:
        await stop.wait()
    finally:
        sweeper.cancel()
        _log("stopping")
        await runner.cleanup()


def serve(cfg: AgentConfig) -> None:
    """Run the agent until SIGINT/SIGTERM. Creates the token file (0600) on first start."""
    from modelpress._deps import require

    require("aiohttp", "the agent")
    cfg.check()
    state = Path(cfg.state_dir).expanduser()
    lock_fd = lock_state_dir(state)
    try:
        token_file = Path(cfg.token_file).expanduser() if cfg.token_file else state / "token"
        token, created = load_or_create_token(token_file)
        _log(f"{'created a new token in' if created else 'token from'} {token_file} (clients: export "
             f"MODELPRESS_AGENT_TOKEN=\"$(cat {token_file})\")")
        asyncio.run(_serve(cfg, token))
    finally:
        os.close(lock_fd)
