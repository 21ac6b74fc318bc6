"""Output safety (issue 16): no command may write over one of its own inputs (symlinks and hard links
followed), temp files never outlive their run (signals included; a SIGKILL'd run's temps are swept by the
next one), an unwritable output folder is a one-line error, and a damaged cache entry is never reused."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from modelpress.errors import ModelpressError
from tests.conftest import ROOT, assert_clean_error, no_leftovers, run_cli

STUDY = """\
modelpress: 1
kind: study
model: {model}
data: {{eval: data.npz, calib: data.npz}}
candidates:
  - [dynamic-int8]
  - name: s8
    chain: [{{technique: static-int8, options: {{per_channel: false}}}}]
  - name: fp16
    chain: [fp16]
profiles: [edge-1core]
profile: {{iterations: 5, warmup: 1}}
metric: top1
selection: {{max_accuracy_drop: 1.0, objective: size}}
output: study
"""


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links followed) -> its sha256: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    for pid in range(4_000_000, 3_000_000, -7919):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            continue
    pytest.skip("no free pid found")


@pytest.fixture
def work(tmp_path, tiny_onnx, tiny_npz) -> Path:
    """m.onnx, calib.npz, data.npz, report.json, a study recipe, an image folder, a text file and tokenizer
    folder, an LLM-style folder, and a model with its weights in an external-data file."""
    import onnx
    from PIL import Image

    (tmp_path / "m.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "calib.npz").write_bytes(tiny_npz.read_bytes())
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    (tmp_path / "report.json").write_text(json.dumps({"schema": "modelpress.report", "variants": []}))
    (tmp_path / "r.yaml").write_text(STUDY.format(model="m.onnx"))
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"img{i}.png")
    (tmp_path / "lines.txt").write_text("one line\nanother line\n")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    (llm / "config.json").write_text('{"model_type": "llama"}')
    m = onnx.load(str(tiny_onnx))
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").is_file()
    os.symlink("m.onnx", tmp_path / "link.onnx")
    os.symlink(".", tmp_path / "here")
    os.link(tmp_path / "m.onnx", tmp_path / "hard.onnx")
    return tmp_path


def _optimize_recipe(t: Path, output: str) -> str:
    (t / "o.yaml").write_text(f"modelpress: 1\nmodel: m.onnx\noutput: {output}\nsteps:\n  - technique: dynamic-int8\n")
    return str(t / "o.yaml")


def _study_over_its_model(t: Path) -> str:
    (t / "study").mkdir()
    (t / "study" / "dynamic-int8.onnx").write_bytes((t / "m.onnx").read_bytes())
    (t / "s.yaml").write_text(STUDY.format(model="study/dynamic-int8.onnx"))
    return str(t / "s.yaml")


SAME = "is the same file as"
# (name, argv builder, message fragment): each would destroy an input (or one output another) and exit 0 before
CASES = [
    ("package -o MODEL", lambda t: ["package", f"{t}/m.onnx", "-o", f"{t}/m.onnx"],
     f"-o {{t}}/m.onnx {SAME} the input MODEL:"),
    ("profile -o MODEL", lambda t: ["profile", f"{t}/m.onnx", "-n", "5", "-o", f"{t}/m.onnx"], f"{SAME} the input MODEL"),
    ("profile -o --inputs", lambda t: ["profile", f"{t}/m.onnx", "--inputs", f"{t}/data.npz", "-o", f"{t}/data.npz"],
     f"{SAME} the input --inputs"),
    ("optimize --dump-recipe MODEL", lambda t: ["optimize", f"{t}/m.onnx", "-t", "dynamic-int8", "-o", f"{t}/out.onnx",
                                                "--dump-recipe", f"{t}/m.onnx"],
     f"--dump-recipe {{t}}/m.onnx {SAME} the input MODEL"),
    ("optimize -o --calib", lambda t: ["optimize", f"{t}/m.onnx", "-t", "static-int8", "--calib", f"{t}/calib.npz",
                                       "-o", f"{t}/calib.npz"], f"{SAME} the input --calib"),
    ("optimize -o MODEL", lambda t: ["optimize", f"{t}/m.onnx", "-t", "dynamic-int8", "-o", f"{t}/m.onnx"],
     f"{SAME} the input MODEL"),
    ("optimize --recipe whose output is the recipe", lambda t: ["optimize", "--recipe", _optimize_recipe(t, "o.yaml")],
     f"{SAME} the input --recipe"),
    ("optimize --recipe whose output is its model", lambda t: ["optimize", "--recipe", _optimize_recipe(t, "m.onnx")],
     f"{SAME} the input MODEL"),
    ("optimize -o and --dump-recipe the same", lambda t: ["optimize", f"{t}/m.onnx", "-t", "dynamic-int8", "-o",
                                                          f"{t}/out.onnx", "--dump-recipe", f"{t}/out.onnx"],
     "are the same file"),
    ("package -o --report", lambda t: ["package", f"{t}/m.onnx", "--report", f"{t}/report.json", "-o", f"{t}/report.json"],
     f"{SAME} the input --report"),
    ("run --dump-recipe RECIPE", lambda t: ["run", f"{t}/r.yaml", "--dump-recipe", f"{t}/r.yaml"],
     f"{SAME} the input RECIPE"),
    ("study candidate over its model", lambda t: ["run", _study_over_its_model(t)], f"{SAME} the input model"),
    ("data images -o one of the images", lambda t: ["data", "images", f"{t}/imgs", "-o", f"{t}/imgs/img1.png"],
     f"{SAME} the input FOLDER"),
    ("data text -o FILE", lambda t: ["data", "text", f"{t}/lines.txt", "--tokenizer", f"{t}/tok", "-o", f"{t}/lines.txt"],
     f"{SAME} the input FILE"),
    ("export -o --inputs", lambda t: ["export", "tests.factories:tiny_cnn", "--inputs", f"{t}/data.npz", "-o",
                                      f"{t}/data.npz"], f"{SAME} the input --inputs"),
    ("prune -o --finetune-data", lambda t: ["prune", "tests.factories:tiny_cnn", "--finetune-data", f"{t}/data.npz",
                                            "--epochs", "1", "-o", f"{t}/data.npz"], f"{SAME} the input --finetune-data"),
    ("lowrank -o --finetune-data", lambda t: ["lowrank", "tests.factories:tiny_cnn", "--finetune-data",
                                              f"{t}/data.npz", "-o", f"{t}/data.npz"], f"{SAME} the input --finetune-data"),
    ("llm eval -o a file of the folder", lambda t: ["llm", "eval", f"{t}/llm", "-o", f"{t}/llm/model.onnx"],
     f"{SAME} model.onnx in the input FOLDERS"),
    ("llm quantize -o FOLDER", lambda t: ["llm", "quantize", f"{t}/llm", "-t", "int8-weight", "-o", f"{t}/llm"],
     "is the same folder as the input FOLDER"),
    ("llm export -o SOURCE", lambda t: ["llm", "export", f"{t}/llm", "-o", f"{t}/llm"], "is the same folder as the input SOURCE"),
    ("llm lora -o SOURCE", lambda t: ["llm", "lora", f"{t}/llm", "-o", f"{t}/llm"], "is the same folder as the input SOURCE"),
    ("symlinked output -> MODEL", lambda t: ["optimize", f"{t}/m.onnx", "-t", "dynamic-int8", "-o", f"{t}/link.onnx"],
     f"-o {{t}}/link.onnx {SAME} the input MODEL ({{t}}/m.onnx)"),
    ("output through a symlinked folder", lambda t: ["profile", f"{t}/m.onnx", "-n", "5", "-o", f"{t}/here/m.onnx"],
     f"{SAME} the input MODEL"),
    ("hard link to MODEL", lambda t: ["package", f"{t}/m.onnx", "-o", f"{t}/hard.onnx"], f"{SAME} the input MODEL"),
    ("-o the model's external data", lambda t: ["profile", f"{t}/ext.onnx", "-n", "5", "-o", f"{t}/ext.onnx.data"],
     f"{SAME} the external data ext.onnx.data of the input MODEL"),
]


@pytest.mark.parametrize("name,argv,needle", CASES, ids=[c[0] for c in CASES])
def test_output_never_overwrites_an_input(work, name, argv, needle):
    args = argv(work)
    before = _snapshot(work)
    proc = run_cli(*args)
    assert_clean_error(proc, 2, needle.replace("{t}", str(work)))
    assert _snapshot(work) == before  # every input byte-identical, nothing written, no temp left


def test_distinct_outputs_still_work_and_replay(work):
    """The rule refuses only real clashes: a second run over its own earlier output, and a recipe replay."""
    args = ["optimize", str(work / "m.onnx"), "-t", "dynamic-int8", "-o", str(work / "out.onnx"),
            "--dump-recipe", str(work / "run.yaml")]
    assert run_cli(*args).returncode == 0
    first = _sha(work / "out.onnx")
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr
    p = run_cli("optimize", "--recipe", str(work / "run.yaml"))
    assert p.returncode == 0, p.stderr
    assert _sha(work / "out.onnx") == first


# ----------------------------------------------------------------------------- temps and signals


HOLD = """\
import sys, time
from modelpress.io import atomic_dir, atomic_path, install_signal_handlers
install_signal_handlers()
with (atomic_dir if sys.argv[2] == "dir" else atomic_path)(sys.argv[1]) as tmp:
    if sys.argv[2] == "file":
        tmp.write_bytes(b"partial")
    print(tmp.name, flush=True)
    time.sleep(120)
"""


def _holder(dest: Path, kind: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(dest), kind], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    assert name.startswith(f".{dest.name}.{proc.pid}."), (name, proc.stderr.read() if not name else "")
    assert (dest.parent / name).exists()
    return proc, name


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_signal_removes_the_temp_beside_the_target(tmp_path, sig, kind):
    if signal.getsignal(getattr(signal, sig)) is signal.SIG_IGN:
        pytest.skip(f"{sig} is ignored here (nohup?): the CLI leaves an ignored signal ignored")
    dest = tmp_path / ("out.onnx" if kind == "file" else "outdir")
    proc, name = _holder(dest, kind)
    proc.send_signal(getattr(signal, sig))
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, sig)
    assert not (tmp_path / name).exists() and not dest.exists()
    assert no_leftovers(tmp_path, dest.name)


def test_sigterm_mid_optimize_leaves_no_temp(tmp_path, tiny_onnx):
    """A real `modelpress optimize` (static INT8, slow calibration), SIGTERM'd while it works: exit 143, one
    line, and no temp anywhere: not beside the target, not in TMPDIR."""
    rng = np.random.default_rng(0)
    from modelpress.data import Dataset

    # enough calibration work (~8 s here) that the signal lands mid-run even on a loaded machine
    Dataset({"input": rng.random((16000, 1, 16, 16), dtype=np.float32)}).save(tmp_path / "big.npz")
    (tmp_path / "m.onnx").write_bytes(tiny_onnx.read_bytes())
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelpress", "optimize", str(tmp_path / "m.onnx"), "-t", "static-int8", "--calib",
         str(tmp_path / "big.npz"), "--option", "max_calib_samples=16000", "--option", "calib_batch_size=1",
         "--option", "calibration=percentile", "-o", str(out / "m.int8.onnx")],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmpdir)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ours = lambda: [p for p in [*tmpdir.iterdir(), *out.iterdir()] if p.name != ".ses"]  # noqa: E731
    # (.ses: onnxruntime's session-id file, which its import writes to TMPDIR and keeps on purpose)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ours():
        time.sleep(0.02)  # until it is at work: a temp folder or file of its own exists
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "modelpress: terminated by SIGTERM", err
    assert "Traceback" not in err
    assert not ours(), ours()


def test_sigkilled_runs_temps_are_swept_by_the_next_run(tmp_path, tiny_onnx):
    """SIGKILL cannot be caught: its temp stays, and the next write of the same artifact removes it (its pid is
    gone, its lock released), leaving a live writer's temp alone."""
    (tmp_path / "m.onnx").write_bytes(tiny_onnx.read_bytes())
    dest = tmp_path / "out.onnx"
    live, live_name = _holder(dest, "file")
    try:
        proc, killed = _holder(dest, "file")
        proc.kill()
        proc.communicate(timeout=60)
        assert (tmp_path / killed).exists()
        dead = tmp_path / f".out.onnx.{_dead_pid()}.0123abcd.onnx"
        dead.write_bytes(b"")
        other = tmp_path / f".out.onnx.export.json.{_dead_pid()}.0123abcd.json"  # another artifact's temp
        other.write_text("{}")
        p = run_cli("optimize", str(tmp_path / "m.onnx"), "-t", "dynamic-int8", "-o", str(dest))
        assert p.returncode == 0, p.stderr
        assert not (tmp_path / killed).exists() and not dead.exists()
        assert (tmp_path / live_name).exists() and other.exists()
    finally:
        live.kill()
        live.communicate(timeout=60)


def test_sweep_spares_a_locked_temp_of_an_unknown_pid(tmp_path):
    """A pid this process cannot see (another pid namespace sharing the folder) may still be writing: its
    lock says so."""
    import fcntl

    from modelpress.io import sweep_stale_temps

    held = tmp_path / f".x.onnx.{_dead_pid()}.89abcdef.onnx"
    held.write_bytes(b"")
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert sweep_stale_temps(tmp_path, "x.onnx") == [] and held.exists()
    finally:
        os.close(fd)
    assert sweep_stale_temps(tmp_path, "x.onnx") == [held] and not held.exists()


# ----------------------------------------------------------------------------- unwritable outputs


def test_read_only_output_folder_is_a_one_line_error(tmp_path, tiny_onnx):
    (tmp_path / "m.onnx").write_bytes(tiny_onnx.read_bytes())
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("this user (root?) can write in a read-only folder")
        for argv in (["optimize", str(tmp_path / "m.onnx"), "-t", "dynamic-int8", "-o", str(ro / "x.onnx")],
                     ["package", str(tmp_path / "m.onnx"), "-o", str(ro / "sub" / "x.mpk")],
                     ["export", "tests.factories:tiny_cnn", "-o", str(ro / "x.onnx")]):
            assert_clean_error(run_cli(*argv), 2, "cannot write in")
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o755)


def test_output_below_a_file_is_a_one_line_error(tmp_path, tiny_onnx):
    """Root can write anywhere, so this is the unwritable-folder case every CI user can run."""
    (tmp_path / "m.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "f").write_text("a file, not a folder")
    proc = run_cli("optimize", str(tmp_path / "m.onnx"), "-t", "dynamic-int8", "-o", str(tmp_path / "f" / "x.onnx"))
    assert_clean_error(proc, 2, "is not a folder")


def test_unwritable_folders_raise_modelpress_errors(tmp_path, monkeypatch):
    """What a non-root user meets, simulated for root: the up-front check, and atomic_path's own
    PermissionError (a folder made read-only after the check) both become one-line ModelpressErrors."""
    from modelpress import io

    monkeypatch.setattr(io.os, "access", lambda *a, **k: False)
    with pytest.raises(ModelpressError, match="cannot write in"):
        io.guard_outputs({}, {"-o": tmp_path / "x.onnx"})
    monkeypatch.undo()
    real_open = os.open

    def denied(path, flags, *a, **k):
        if Path(path).name.startswith(".x.onnx."):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(io.os, "open", denied)
    with pytest.raises(ModelpressError, match=r"cannot write .*x\.onnx: .* is not writable \(permission denied\)"):
        with io.atomic_path(tmp_path / "x.onnx"):
            pass
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- the cache


def test_cache_entries_are_checked_before_reuse(tmp_path):
    from modelpress.cache import CacheEntryDamaged, StepCache

    c = StepCache(tmp_path / "cache")
    c.put("evals", "k", {"top1": 0.5, "fidelity": None})
    assert c.get("evals", "k") == {"top1": 0.5, "fidelity": None} and (c.hits, c.misses) == (1, 0)
    entry = tmp_path / "cache" / "evals" / "k.json"
    doc = json.loads(entry.read_text())
    doc["value"]["top1"] = 0.9  # parses, right type, wrong bytes
    entry.write_text(json.dumps(doc))
    assert c.get("evals", "k") is None and not entry.exists()
    for damaged in ("{not json", "null", "[1, 2]", json.dumps({"cache": 2, "kind": "evals", "key": "k"})):
        entry.write_text(damaged)
        assert c.get("evals", "k") is None and not entry.exists()
    c.put("evals", "k", [1, 2])
    assert c.get("evals", "k") is None  # not the expected type (a dict)
    assert (c.hits, c.misses) == (1, 6)

    src = tmp_path / "model.onnx"
    src.write_bytes(b"model bytes" * 100)
    c.put_model("m", src, {"config": {}, "notes": []})
    assert c.model("m") is not None and c.get("models", "m")["sha256"] == _sha(src)
    assert c.load_model("m", tmp_path / "copy.onnx")["config"] == {}
    assert _sha(tmp_path / "copy.onnx") == _sha(src)
    cached = tmp_path / "cache" / "models" / "m.onnx"
    cached.write_bytes(b"model bytes" * 99 + b"xodel bytes")  # same size, one byte off
    hits, misses = c.hits, c.misses
    assert c.model("m") is None and not cached.exists()
    assert (c.hits, c.misses) == (hits, misses + 1)

    c.put_model("m", src, {"config": {}, "notes": []})
    path = c.model("m")
    path.write_bytes(b"changed after the check")
    (tmp_path / "dest.onnx").write_bytes(b"old")
    with pytest.raises(CacheEntryDamaged):
        c.restore(path, tmp_path / "dest.onnx")
    assert (tmp_path / "dest.onnx").read_bytes() == b"old" and not path.exists()
    assert c.load_model("m", tmp_path / "dest.onnx") is None
    assert (tmp_path / "dest.onnx").read_bytes() == b"old"


def test_damaged_cache_entries_are_rebuilt_not_copied(tmp_path, tiny_onnx, tiny_npz):
    """A study's cached model with damaged bytes and evaluations with edited values: the re-run rebuilds and
    re-evaluates them (the study's models are the first run's, byte for byte), and says so in its counts."""
    (tmp_path / "m.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    (tmp_path / "r.yaml").write_text(STUDY.format(model="m.onnx"))
    p = run_cli("run", str(tmp_path / "r.yaml"), "--json")
    assert p.returncode == 0, p.stderr
    first = json.loads(p.stdout)
    study = tmp_path / "study"
    shas = {v["name"]: _sha(study / f"{v['name']}.onnx") for v in first["variants"][1:]}
    cache = study / ".cache"
    models = sorted((cache / "models").glob("*.onnx"))
    assert len(models) == 3
    damaged = models[0]
    damaged.write_bytes(damaged.read_bytes()[:-64] + b"\0" * 64)
    evals = sorted((cache / "evals").glob("*.json"))
    assert len(evals) == 4
    for e in evals:
        doc = json.loads(e.read_text())
        doc["value"]["top1"] = 1.0
        e.write_text(json.dumps(doc))

    p = run_cli("run", str(tmp_path / "r.yaml"), "--json")
    assert p.returncode == 0, p.stderr
    again = json.loads(p.stdout)
    for name, sha in shas.items():
        assert _sha(study / f"{name}.onnx") == sha, name
    assert [v["accuracy"] for v in again["variants"]] == [v["accuracy"] for v in first["variants"]]
    # reused: 2 models + 4 profiles; recomputed: the damaged model and the 4 evaluations
    assert again["cache"] == {"hits": 2 + 4, "misses": 1 + 4}
    import onnx

    for m in (cache / "models").glob("*.onnx"):
        onnx.checker.check_model(str(m))
    assert not [f for f in study.rglob(".*") if f.is_file()]
