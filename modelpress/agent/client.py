"""The client side of `--target`: send a model once (by sha256), run the profile on the agent, get the record back.

Standard library only (http.client, ssl), so the workstation needs no extra. Every failure is one
ModelpressError line naming the target: connection refused, TLS, token rejected, too large, busy, a model
the device cannot load, an agent that died or went silent mid-job. Nothing is written locally here: the
caller writes its outputs only after a whole result came back.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from modelpress.agent.targets import Target, resolve_target
from modelpress.errors import ModelpressError, first_line

CONNECT_TIMEOUT_S = 15.0
UPLOAD_CHUNK = 1 << 20


@dataclass
class RemoteProfile:
    results: list  # list[ProfileResult], the same records a local profile returns
    target: dict[str, Any] = field(default_factory=dict)  # name, url, device facts, transfer, timing


class AgentClient:
    """One agent: info, content-addressed upload, a streamed profile job."""

    def __init__(self, target: Target) -> None:
        self.target = target
        parts = urlsplit(target.url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.where = f"agent {target.name}" if target.name == target.url else f"target {target.name} ({target.url})"

    # ------------------------------------------------------------------ plumbing

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if not self.https:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        ctx = ssl.create_default_context(cafile=str(self.target.ca) if self.target.ca else None)
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.target.token}", **(extra or {})}

    def _fail(self, e: BaseException, during: str) -> ModelpressError:
        """A network-level failure as one line."""
        if isinstance(e, ConnectionRefusedError):
            why = "connection refused (is `modelpress agent serve` running there, on that port?)"
        elif isinstance(e, (socket.timeout, TimeoutError)):
            why = f"no answer for {self.target.timeout_s:g} s (the agent or the network is gone)"
        elif isinstance(e, ssl.SSLCertVerificationError):
            why = f"TLS certificate not trusted ({first_line(e)}); give the target's `ca:` in targets.yaml"
        elif isinstance(e, ssl.SSLError):
            why = f"TLS failed: {first_line(e)}"
        elif isinstance(e, socket.gaierror):
            why = f"unknown host {self.host!r}"
        elif isinstance(e, (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionResetError,
                            BrokenPipeError, ConnectionAbortedError)):
            why = "the agent closed the connection (it stopped, was killed or restarted)"
        else:
            why = first_line(e)
        return ModelpressError(f"{self.where}: {during}: {why}; no result, nothing written")

    def _refusal(self, status: int, body: bytes, during: str) -> ModelpressError:
        try:
            msg = str(json.loads(body.decode("utf-8")).get("error") or "")
        except (ValueError, AttributeError, UnicodeDecodeError):
            msg = ""
        msg = " ".join(msg.split())[:400] or f"HTTP {status}"
        if status == 401:
            hint = " (check MODELPRESS_AGENT_TOKEN or the target's token_env/token_file)"
            return ModelpressError(f"{self.where}: {during}: refused: {msg}{hint}")
        return ModelpressError(f"{self.where}: {during}: {msg}")

    def _call(self, method: str, path: str, during: str, body: Any = None, headers: dict[str, str] | None = None,
              ok: tuple[int, ...] = (200,)) -> tuple[int, dict[str, Any]]:
        conn = self._connection(CONNECT_TIMEOUT_S if body is None else max(self.target.timeout_s, CONNECT_TIMEOUT_S))
        try:
            try:
                conn.request(method, self.prefix + path, body=body, headers=self._headers(headers))
            except (BrokenPipeError, ConnectionResetError) as e:  # refused mid-body: the answer may say why
                try:
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    raise self._fail(e, during) from None
            else:
                resp = conn.getresponse()
            data = resp.read()
        except ModelpressError:
            raise
        except (OSError, http.client.HTTPException) as e:
            raise self._fail(e, during) from None
        finally:
            conn.close()
        if resp.status not in ok:
            raise self._refusal(resp.status, data, during)
        try:
            return resp.status, (json.loads(data) if data else {})
        except ValueError:
            raise ModelpressError(f"{self.where}: {during}: the answer is not JSON (is this a modelpress agent?)") from None

    # ------------------------------------------------------------------ the API

    def info(self) -> dict[str, Any]:
        _, out = self._call("GET", "/v1/info", "asking for its facts")
        if out.get("agent") != "modelpress":
            raise ModelpressError(f"{self.where}: not a modelpress agent")
        return out

    def has(self, kind: str, sha: str) -> bool:
        status, _ = self._call("HEAD", f"/v1/{kind}/{sha}", f"looking up {kind} {sha[:12]}", ok=(200, 404))
        return status == 200

    def ensure(self, kind: str, sha: str, body: bytes | Path, size: int, limit: int | None = None) -> bool:
        """Upload unless the agent has it already; True when bytes were sent."""
        if self.has(kind, sha):
            return False
        if limit is not None and size > limit:
            what = "the model" if kind == "models" else "the input data"
            raise ModelpressError(f"{self.where}: {what} is {size / 1e6:.1f} MB, over the agent's upload limit of "
                                  f"{limit / 1e6:g} MB (its --max-upload-mb)")
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if isinstance(body, Path):
            with open(body, "rb") as f:
                self._call("PUT", f"/v1/{kind}/{sha}", f"uploading {kind} {sha[:12]}", f, headers, ok=(200, 201))
        else:
            self._call("PUT", f"/v1/{kind}/{sha}", f"uploading {kind} {sha[:12]}", io.BytesIO(body), headers,
                       ok=(200, 201))
        return True

    def profile(self, job: dict[str, Any], on_status: Callable[[str], None] | None = None) -> dict[str, Any]:
        """POST the job, follow its NDJSON stream (heartbeats keep the socket alive), return its result."""
        during = "profiling"
        conn = self._connection(self.target.timeout_s)
        try:
            conn.request("POST", self.prefix + "/v1/profile", body=json.dumps(job).encode(),
                         headers=self._headers({"Content-Type": "application/json"}))
            resp = conn.getresponse()
            if resp.status != 200:
                raise self._refusal(resp.status, resp.read(), during)
            said_queued = False
            while True:
                line = resp.readline()
                if not line:
                    raise self._fail(http.client.IncompleteRead(b""), "mid-job")
                try:
                    msg = json.loads(line)
                except ValueError:
                    raise ModelpressError(f"{self.where}: {during}: a garbled answer; no result, nothing written") from None
                if "result" in msg:
                    return msg["result"]
                if "error" in msg:
                    raise ModelpressError(f"{self.where}: {' '.join(str(msg['error']).split())[:500]}")
                if msg.get("status") == "queued" and on_status and not said_queued:
                    on_status(f"{self.where}: queued behind {msg.get('ahead', '?')} job(s)")
                    said_queued = True
        except ModelpressError:
            raise
        except (OSError, http.client.HTTPException) as e:
            raise self._fail(e, "mid-job" if isinstance(e, (http.client.IncompleteRead, ConnectionResetError))
                             else during) from None
        finally:
            conn.close()


def _model_bytes(model: Path) -> tuple[bytes | Path, int, str]:
    """(body, size, sha256) of what to send: the file itself, or, when its weights live in external data files,
    the model with them inlined (the agent stores one content-addressed file per model)."""
    import hashlib

    import onnx

    from modelpress.cache import file_sha256
    from modelpress.onnxutil import external_locations

    if not external_locations(onnx.load(str(model), load_external_data=False)):
        return model, model.stat().st_size, file_sha256(model)
    try:
        data = onnx.load(str(model)).SerializeToString()
    except Exception as e:  # over protobuf's 2 GB: it cannot travel as one file
        raise ModelpressError(f"{model}: its external data cannot be inlined for upload ({first_line(e)})") from None
    return data, len(data), hashlib.sha256(data).hexdigest()


def _result_records(raw: list[dict[str, Any]], model: Path) -> list:
    from modelpress.benchmarks.profiler import LatencyStats, ProfileResult

    names = {f.name for f in fields(ProfileResult)}
    stat_names = {f.name for f in fields(LatencyStats)}
    out = []
    for r in raw:
        rec = {k: v for k, v in r.items() if k in names}
        rec["stats"] = LatencyStats(**{k: v for k, v in r["stats"].items() if k in stat_names})
        rec["model"] = str(model)  # the agent's copy is named by its sha256; the record names the user's file
        out.append(ProfileResult(**rec))
    return out


def _job(model_sha: str, inputs_sha: str | None, data_label: str | None, profiles: list[dict[str, Any]], config,
         runtime: str, **extra: Any) -> dict[str, Any]:
    return {"model": model_sha, "inputs": inputs_sha, "data_label": data_label, "profiles": profiles,
            "runtime": runtime, "warmup": config.warmup, "iterations": config.iterations,
            "duration_s": config.duration_s, "batch_size": config.batch_size,
            "graph_optimization": config.graph_optimization, "op_breakdown": config.op_breakdown, **extra}


def _timing(t0: float, t1: float, t2: float, agent_timing: dict[str, Any]) -> dict[str, Any]:
    job_s = agent_timing.get("job_s")
    return {"setup_s": round(t1 - t0, 3), "request_s": round(t2 - t1, 3), **agent_timing,
            "overhead_s": None if job_s is None else round((t2 - t0) - job_s, 3)}


class RemoteRounds:
    """`gate --target`: the interleaved latency rounds of two models, run as ONE job on the device's agent
    (old, new, old, new, ... with nothing else in between); accuracy is still measured here."""

    def __init__(self, target: str, targets_file: Path | None = None,
                 on_status: Callable[[str], None] | None = None) -> None:
        self.tgt = resolve_target(target, targets_file)
        self.client, self.on_status = AgentClient(self.tgt), on_status
        self.target: dict[str, Any] = {}

    def pairs(self, old_model: Path, new_model: Path, preset: str, config, inputs, rounds: int) -> list[tuple[float, float]]:
        """[(baseline p50 ms, new p50 ms)] per round, measured on the device."""
        import hashlib

        import numpy as np

        t0 = time.perf_counter()
        limit = self.client.info().get("limits", {}).get("max_upload_bytes")
        shas, sent = [], []
        for m in (old_model, new_model):
            body, size, sha = _model_bytes(Path(m))
            sent.append(self.client.ensure("models", sha, body, size, limit))
            shas.append(sha)
        inputs_sha = None
        if inputs is not None:
            buf = io.BytesIO()
            np.savez(buf, **inputs.inputs)
            data = buf.getvalue()
            inputs_sha = hashlib.sha256(data).hexdigest()
            self.client.ensure("data", inputs_sha, data, len(data), limit)
        t1 = time.perf_counter()
        job = _job(shas[0], inputs_sha, "given data" if inputs is not None else None,
                   [{"preset": preset, "cores": None, "threads": None}], config, config.runner,
                   interleave=shas[1], rounds=rounds)
        out = self.client.profile(job, self.on_status)
        t2 = time.perf_counter()
        res = out.get("results", [])
        if len(res) != 2 * rounds:
            raise ModelpressError(f"{self.client.where}: the agent answered {len(res)} results for {rounds} rounds of "
                                  "two models; nothing written")
        self.target = {**self.tgt.describe(), "device": out.get("device", {}),
                       "transfer": {"baseline_sha256": shas[0], "new_sha256": shas[1], "uploaded": sent},
                       "timing": _timing(t0, t1, t2, out.get("timing", {}))}
        return [(round(res[i]["stats"]["p50_ms"], 4), round(res[i + 1]["stats"]["p50_ms"], 4))
                for i in range(0, len(res), 2)]


def profile_on_target(target: str, targets_file: Path | None, model: Path, presets: tuple[str, ...] | list[str],
                      cores: str | None, threads: int | None, config, inputs_file: Path | None,
                      runtime_given: bool = True, on_status: Callable[[str], None] | None = None) -> RemoteProfile:
    """`modelpress profile MODEL --target T`: the same records as a local profile, measured on the device.

    `config` is the local ProfileConfig; its runner is replaced by the target's default runtime when
    `runtime_given` is False; with no presets and no --cores/--threads the target's default presets apply."""
    from modelpress.cache import file_sha256

    tgt = resolve_target(target, targets_file)
    if inputs_file is not None:
        from modelpress.data import load_npz

        load_npz(inputs_file)  # a broken file fails here, before any transfer
    client = AgentClient(tgt)
    t0 = time.perf_counter()
    info = client.info()
    limit = info.get("limits", {}).get("max_upload_bytes")
    body, size, sha = _model_bytes(Path(model))
    sent_model = client.ensure("models", sha, body, size, limit)
    inputs_sha, sent_inputs = None, False
    if inputs_file is not None:
        inputs_sha = file_sha256(inputs_file)
        sent_inputs = client.ensure("data", inputs_sha, Path(inputs_file), Path(inputs_file).stat().st_size, limit)
    t1 = time.perf_counter()
    names = list(presets) or ([] if cores is not None or threads is not None else tgt.presets)
    profiles = [{"preset": p, "cores": cores, "threads": threads} for p in names] or \
        [{"preset": None, "cores": cores, "threads": threads}]
    runtime = config.runner if runtime_given or not tgt.runtime else tgt.runtime
    job = _job(sha, inputs_sha, str(inputs_file) if inputs_file else None, profiles, config, runtime)
    out = client.profile(job, on_status)
    t2 = time.perf_counter()
    results = _result_records(out.get("results", []), Path(model))
    if not results:
        raise ModelpressError(f"{client.where}: the agent answered without results; nothing written")
    return RemoteProfile(results, {
        **tgt.describe(), "device": out.get("device", {}),
        "transfer": {"model_sha256": sha, "model_bytes": size, "model_uploaded": sent_model,
                     "inputs_sha256": inputs_sha, "inputs_uploaded": sent_inputs},
        "timing": _timing(t0, t1, t2, out.get("timing", {})),
    })


def describe_remote(target: dict[str, Any], results: list | None = None) -> str:
    """Two or three lines for the human table: where it ran, what it moved, and the energy (or why not)."""
    d, tr, tm = target.get("device", {}), target.get("transfer", {}), target.get("timing", {})
    mem = (d.get("memory") or {}).get("total_mb")
    lines = [f"measured on {target.get('name')}: {d.get('cpu')} ({d.get('arch')}{', ' + d['board'] if d.get('board') else ''}), "
             f"{d.get('usable_cores')} usable cores, {f'{mem / 1024:.1f} GiB, ' if mem else ''}{d.get('os')}, "
             f"onnxruntime {d.get('onnxruntime')}; ISA: {', '.join(d.get('isa') or []) or '-'}",
             f"model {'uploaded' if tr.get('model_uploaded') else 'already on the agent'} "
             f"({tr.get('model_bytes', 0) / 1e6:.2f} MB, sha256 {str(tr.get('model_sha256'))[:12]}); "
             f"job {tm.get('job_s')} s on the agent, overhead {tm.get('overhead_s')} s"]
    for r in results or []:
        e = r.energy or {}
        lines.append(f"energy ({r.profile['name']}): " + (
            f"{e['joules_per_inference'] * 1000:.3f} mJ per inference call, {e['average_watts']} W average "
            f"({e['source']}, whole package)" if e.get("available") else f"not available ({e.get('reason', 'not measured')})"))
    return "\n".join(lines)
