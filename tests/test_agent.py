"""The profiling agent, for real: `modelpress agent serve` on 127.0.0.1 (a free port) in a subprocess, real
onnxruntime, real HTTP. No wall-time assertions beyond sanity; every server is started and stopped here."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiohttp")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelpress.agent.client import AgentClient, profile_on_target  # noqa: E402
from modelpress.benchmarks.energy import EnergyMeter  # noqa: E402
from modelpress.agent.store import BlobStore, load_or_create_token, token_matches  # noqa: E402
from modelpress.agent.targets import Target, resolve_target  # noqa: E402
from modelpress.benchmarks.presets import PRESETS  # noqa: E402
from modelpress.benchmarks.profiler import ProfileConfig, profile_model  # noqa: E402
from modelpress.cache import file_sha256  # noqa: E402
from modelpress.data import Dataset  # noqa: E402
from modelpress.errors import ModelpressError  # noqa: E402
from tests.conftest import ROOT, assert_clean_error, run_cli  # noqa: E402

FAST = ProfileConfig(iterations=30, warmup=3)


class Agent:
    """A real agent process (its own session, so the test can kill it and its profiling child together)."""

    def __init__(self, state: Path, *args: str, scheme: str = "http") -> None:
        self.state = state
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelpress", "agent", "serve", "--port", "0", "--state-dir", str(state), *args],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(rf"listening on ({scheme}://127\.0\.0\.1:\d+)", line)
            if m:
                self.url = m.group(1)
                threading.Thread(target=self._drain, daemon=True).start()
                self.token = (state / "token").read_text().strip()
                return
        self.stop()
        raise RuntimeError("the agent did not start: " + "".join(self.lines)[-2000:])

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def target(self, token: str | None = None) -> Target:
        return Target(self.url, self.url, token or self.token, timeout_s=30)

    def info(self) -> dict:
        return AgentClient(self.target()).info()

    def wait_running(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.info()["jobs"]["running"] == 0:
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the agent and its profiling child, both started here
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = Agent(tmp_path_factory.mktemp("agent"), "--queue", "1", "--max-upload-mb", "1")
    yield a
    a.stop()


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory) -> Path:
    """Built with onnx.helper: the agent's tests need no PyTorch (a board running the agent has none)."""
    return _mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx")


@pytest.fixture
def env_token(agent, monkeypatch):
    monkeypatch.setenv("MODELPRESS_AGENT_TOKEN", agent.token)
    return agent.token


def _mlp(path: Path, width: int = 64, seed: int = 0, depth: int = 1) -> Path:
    """MatMul+Relu layers built with onnx.helper; the seed makes its bytes (so its sha256) unique to a test."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        inits.append(numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), f"w{i}"))
        out = "y" if i == depth - 1 else f"r{i}"
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]), helper.make_node("Relu", [f"h{i}"], [out])]
        prev = out
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    g = helper.make_graph(nodes, "mlp", [x], [y], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _put(agent: Agent, sha: str, body: bytes, chunked: bool = False, token: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", int(agent.url.rsplit(":", 1)[1]), timeout=30)
    headers = {"Authorization": f"Bearer {token or agent.token}"}
    try:
        if chunked:
            conn.request("PUT", f"/v1/models/{sha}", body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                         headers=headers, encode_chunked=True)
        else:
            conn.request("PUT", f"/v1/models/{sha}", body=body, headers=headers)
        return conn.getresponse().status
    except (BrokenPipeError, ConnectionResetError):
        return 413  # refused before the whole body was read
    finally:
        conn.close()


# ----------------------------------------------------------------------------- remote == local


def test_remote_profile_matches_local_and_sends_model_once(agent, env_token, tmp_path):
    model = _mlp(tmp_path / "m.onnx", seed=10)  # bytes no other test sent
    local = profile_model(model, PRESETS["edge-1core"], FAST)
    uploads = agent.info()["uploads"]
    first = profile_on_target(agent.url, None, model, ("edge-1core",), None, None, FAST, None)
    second = profile_on_target(agent.url, None, model, ("edge-1core",), None, None, FAST, None)
    r = first.results[0]
    assert set(r.to_dict()) == set(local.to_dict())  # the same record, field for field
    assert r.model == str(model) and r.profile == local.profile and r.affinity == local.affinity == [0]
    assert r.stats.n == local.stats.n == 30 and r.stats.min_ms <= r.stats.p50_ms <= r.stats.max_ms
    assert 0.2 < r.stats.p50_ms / local.stats.p50_ms < 5  # same machine, same profiler: within noise (loosely)
    assert r.energy == local.energy  # the same answer on the same machine (joules, or why not)
    dev = first.target["device"]
    assert dev["cpu"] and dev["usable_cores"] >= 1 and dev["onnxruntime"] and "thermal" in dev
    # the same model twice: bytes sent once
    assert first.target["transfer"]["model_uploaded"] and not second.target["transfer"]["model_uploaded"]
    assert agent.info()["uploads"] == uploads + 1
    assert second.target["timing"]["overhead_s"] >= 0


def test_cli_target_from_targets_file_with_real_inputs(agent, tmp_path):
    model = _mlp(tmp_path / "m.onnx", seed=1)
    data = Dataset({"x": np.random.default_rng(0).random((8, 64), dtype=np.float32)}).save(tmp_path / "x.npz")
    (tmp_path / "agent.token").write_text(agent.token + "\n")
    (tmp_path / "targets.yaml").write_text(
        f"targets:\n  board:\n    url: {agent.url}\n    token_file: agent.token\n    preset: edge-1core\n")
    out = tmp_path / "prof.json"
    p = run_cli("profile", str(model), "-n", "20", "--target", "board", "--targets", str(tmp_path / "targets.yaml"),
                "--inputs", str(data), "-o", str(out), "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["target"]["transfer"]["inputs_uploaded"] and res["results"][0]["inputs"] == str(data)
    assert [r["profile"]["name"] for r in res["results"]] == ["edge-1core"]  # the target's default preset
    assert res["target"]["name"] == "board" and res["target"]["device"]["arch"]
    assert len(json.loads(out.read_text())["results"][0]["samples_ms"]) == 20
    p = run_cli("profile", str(model), "-n", "5", "--target", "nowhere", "--targets", str(tmp_path / "targets.yaml"))
    assert_clean_error(p, 2, "no such target")


def test_external_data_is_inlined_by_the_client_and_refused_raw_by_the_agent(agent, env_token, tmp_path):
    m = onnx.load(str(_mlp(tmp_path / "src.onnx", seed=6)))
    ext = tmp_path / "ext" / "m.onnx"
    ext.parent.mkdir()
    onnx.save(m, str(ext), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    res = profile_on_target(agent.url, None, ext, ("edge-1core",), None, None, FAST, None)
    assert res.results[0].stats.n == 30 and res.target["transfer"]["model_uploaded"]
    raw = ext.read_bytes()  # the graph alone, pointing at m.onnx.data: the agent must not follow it
    sha = __import__("hashlib").sha256(raw).hexdigest()
    assert _put(agent, sha, raw) == 201
    with pytest.raises(ModelpressError, match="on the device: .*external data"):
        AgentClient(agent.target()).profile({"model": sha, "profiles": [{"preset": "edge-1core"}], "iterations": 5})


def test_gate_on_target_runs_interleaved_rounds_on_the_agent(agent, env_token, tmp_path):
    small, big = _mlp(tmp_path / "small.onnx", 128, seed=4), _mlp(tmp_path / "big.onnx", 128, seed=5, depth=8)
    p = run_cli("gate", str(big), "--baseline", str(small), "--target", agent.url, "--rounds", "2", "-n", "20",
                "--json")
    assert p.returncode in (0, 5), p.stderr
    res = json.loads(p.stdout)
    assert len(res["rounds_ms"]) == 2 and res["target"]["device"]["cpu"] and res["profile"] == "edge-1core"
    assert res["new_p50_ms"] > 0 and res["baseline_p50_ms"] > 0
    assert res["target"]["transfer"]["uploaded"] == [True, True]


def test_tls_with_a_self_signed_certificate(tmp_path, mlp_onnx, monkeypatch):
    """HTTPS with --tls-cert/--tls-key; the client trusts the certificate named as `ca:` in targets.yaml."""
    pytest.importorskip("cryptography")
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ag = Agent(tmp_path / "state", "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
               scheme="https")
    try:
        monkeypatch.setenv("MODELPRESS_AGENT_TOKEN", ag.token)
        (tmp_path / "targets.yaml").write_text(f"targets:\n  tls:\n    url: {ag.url}\n    ca: cert.pem\n")
        res = profile_on_target("tls", tmp_path / "targets.yaml", mlp_onnx, ("edge-1core",), None, None, FAST, None)
        assert res.results[0].stats.n == 30
        with pytest.raises(ModelpressError, match="TLS certificate not trusted"):  # without the CA: refused
            profile_on_target(ag.url, None, mlp_onnx, ("edge-1core",), None, None, FAST, None)
    finally:
        ag.stop()


# ----------------------------------------------------------------------------- refusals


def test_wrong_and_missing_token(agent, mlp_onnx, tmp_path, monkeypatch):
    out = tmp_path / "o.json"
    monkeypatch.setenv("MODELPRESS_AGENT_TOKEN", "not-the-token-at-all")
    assert_clean_error(run_cli("profile", str(mlp_onnx), "--target", agent.url, "-o", str(out)), 2, "token rejected")
    monkeypatch.delenv("MODELPRESS_AGENT_TOKEN")
    assert_clean_error(run_cli("profile", str(mlp_onnx), "--target", agent.url, "-o", str(out)), 2,
                       "set MODELPRESS_AGENT_TOKEN")
    assert not out.exists()
    assert _put(agent, "0" * 64, b"x", token="wrong") == 401  # raw HTTP too: nothing before the token
    conn = http.client.HTTPConnection("127.0.0.1", int(agent.url.rsplit(":", 1)[1]), timeout=10)
    conn.request("GET", "/v1/info")
    resp = conn.getresponse()
    assert resp.status == 401 and "no bearer token" in json.loads(resp.read())["error"]
    conn.close()


def test_oversized_and_corrupt_uploads(agent, env_token, tmp_path):
    big = _mlp(tmp_path / "big.onnx", width=600, seed=2)  # 1.44 MB of weights, over the agent's 1 MB
    out = tmp_path / "o.json"
    assert_clean_error(run_cli("profile", str(big), "--target", agent.url, "-o", str(out)), 2, "over the agent's upload limit")
    assert not out.exists()
    body = big.read_bytes()
    sha = file_sha256(big)
    assert _put(agent, sha, body) == 413  # declared too large: refused before reading
    assert _put(agent, sha, body, chunked=True) == 413  # no length given: refused while streaming
    assert _put(agent, file_sha256(tiny := _mlp(tmp_path / "t.onnx", seed=3)), b"other bytes") == 400  # hash mismatch
    client = AgentClient(agent.target())
    assert not client.has("models", sha) and not client.has("models", file_sha256(tiny))
    assert not any((agent.state / "store" / "incoming").iterdir())  # no temp left behind


def test_model_that_fails_to_load_on_the_device(agent, env_token, tmp_path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "bad", [a, b], [y])
    bad = tmp_path / "bad.onnx"  # passes onnx's file check here; onnxruntime refuses the types on the device
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), bad)
    out = tmp_path / "o.json"
    p = run_cli("profile", str(bad), "--target", agent.url, "-o", str(out))
    assert_clean_error(p, 2, "on the device: onnxruntime cannot load")
    assert "store" not in p.stderr and not out.exists()
    p = run_cli("profile", str(bad), "--target", agent.url, "--runtime", "no-such-runtime")
    assert_clean_error(p, 2, "unknown runtime")


def test_two_clients_at_once_one_queued_one_busy(agent, env_token, mlp_onnx, tmp_path):
    long = ProfileConfig(iterations=10**7, duration_s=3.0, warmup=1)
    results: dict[str, object] = {}

    def run(name: str, cfg: ProfileConfig) -> None:
        try:
            results[name] = profile_on_target(agent.url, None, mlp_onnx, ("edge-1core",), None, None, cfg, None)
        except ModelpressError as e:
            results[name] = e

    a = threading.Thread(target=run, args=("a", long))
    a.start()
    agent.wait_running()
    b = threading.Thread(target=run, args=("b", FAST))
    b.start()
    deadline = time.monotonic() + 30
    while agent.info()["jobs"]["queued"] == 0:  # b waits behind a (queue of 1)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p = run_cli("profile", str(mlp_onnx), "-n", "5", "--target", agent.url)  # a third one: busy
    assert_clean_error(p, 2, "agent busy")
    a.join(60)
    b.join(60)
    assert not isinstance(results["a"], Exception) and not isinstance(results["b"], Exception), results
    assert results["b"].target["timing"]["queued_s"] > 0  # it ran after a, not beside it


def test_agent_killed_mid_job(tmp_path, mlp_onnx):
    ag = Agent(tmp_path / "state")
    out = tmp_path / "o.json"
    try:
        env = {**os.environ, "MODELPRESS_AGENT_TOKEN": ag.token}
        client = subprocess.Popen(
            [sys.executable, "-m", "modelpress", "profile", str(mlp_onnx), "-n", "100000000", "--duration", "60",
             "--target", ag.url, "-o", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        ag.wait_running()
        ag.kill()
        stdout, stderr = client.communicate(timeout=60)
    finally:
        ag.stop()
    assert_clean_error(subprocess.CompletedProcess([], client.returncode, stdout, stderr), 2, "closed the connection")
    assert not any(p.name.startswith(("o.json", ".o.json")) for p in tmp_path.iterdir())  # nothing half-written


def test_connection_refused_and_ssh_targets(mlp_onnx, monkeypatch):
    monkeypatch.setenv("MODELPRESS_AGENT_TOKEN", "x" * 20)
    assert_clean_error(run_cli("profile", str(mlp_onnx), "--target", "http://127.0.0.1:9"), 2, "connection refused")
    with pytest.raises(ModelpressError, match="ssh:// targets are not supported"):
        resolve_target("ssh://pi@board")


# ----------------------------------------------------------------------------- pieces, without a server


def test_token_file_is_private_and_compared_in_constant_time(tmp_path):
    path = tmp_path / "sub" / "token"
    token, created = load_or_create_token(path)
    assert created and len(token) >= 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_token(path) == (token, False)
    assert token_matches(token, token) and not token_matches(token[:-1] + "?", token) and not token_matches(None, token)
    path.chmod(0o644)
    with pytest.raises(ModelpressError, match="chmod 600"):
        load_or_create_token(path)


def test_store_names_are_hashes_only_and_expire(tmp_path):
    store = BlobStore(tmp_path)
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63):
        with pytest.raises(ModelpressError):
            store.path("models", bad)
    with pytest.raises(ModelpressError):
        store.path("../x", "0" * 64)
    import hashlib

    body = b"some model bytes"
    sha = hashlib.sha256(body).hexdigest()
    with store.receiving("models", sha, 1000) as rx:
        rx.write(body)
    assert store.has("models", sha)
    store.pin(sha)
    assert store.sweep(ttl_s=1, now=time.time() + 10) == []  # held by a job: kept
    store.unpin(sha)
    assert store.sweep(ttl_s=1, now=time.time() + 10) == [f"models/{sha}.onnx"] and not store.has("models", sha)


def test_energy_from_powercap_counters(tmp_path):
    """The RAPL reader on a powercap-shaped folder (this machine has none): package zones summed, sub-zones
    not double counted, a counter wrap handled; without counters the record says why."""
    for zone, name, uj in (("intel-rapl:0", "package-0", 1_000_000), ("intel-rapl:0:0", "core", 500),
                           ("intel-rapl:1", "package-1", 2_000_000)):
        d = tmp_path / "powercap" / zone
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{uj}\n")
        (d / "max_energy_range_uj").write_text("2500000\n")
    meter = EnergyMeter.open(tmp_path / "powercap", tmp_path / "none")
    assert meter.available and [c.name for c in meter.counters] == ["intel-rapl:0 (package-0)", "intel-rapl:1 (package-1)"]
    meter.start()
    (tmp_path / "powercap" / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # +2 J
    (tmp_path / "powercap" / "intel-rapl:1" / "energy_uj").write_text("500000\n")  # wrapped: +1.000001 J
    e = meter.result(1000)
    assert e["available"] and e["joules"] == pytest.approx(3.000001) and e["joules_per_inference"] == pytest.approx(0.003)
    none = EnergyMeter.open(tmp_path / "none", tmp_path / "none").result(10)
    assert none == {"available": False, "reason": none["reason"]} and "no RAPL" in none["reason"]
