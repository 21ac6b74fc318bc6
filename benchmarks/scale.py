"""How cost grows with model size: wall time and peak memory of each technique on synthetic models with
external data (0.5, 1, 2.4 and 4 GB), measured, not guessed.

Each model is a stack of MatMul layers (8192 x 8192 float32 weights, 268 MB each, in `model.onnx.data`; 2, 4, 9
and 15 layers) followed by a Relu, built layer by layer so building it never holds more than one layer. Each
technique runs through `modelpress.optimizers.optimize` (the pass, validation on the runtime, the atomic
placement of model + data: what a user pays) in a fresh child process, whose peak resident memory
(`ru_maxrss`) is reported; the parent polls the child's RSS and kills it past the memory budget.

Before a run, its peak is predicted from the technique's largest measured peak/size ratio on smaller models
(this run's, or `--prior` runs'; 4.5x when none was measured yet); a run predicted past the budget is skipped,
and the table says so. Children run with MODELPRESS_MEMORY_CHECK=0: this script's budget decides, not
optimize()'s own refusal.

    python benchmarks/scale.py --quick                       # 0.5 and 1 GB
    python benchmarks/scale.py --sizes 0.5,1,2.4,4 -o scale  # the full table (json + markdown)
    python benchmarks/scale.py --sizes 2.4 --techniques dynamic-int8,fp16 --budget-gb 16
    python benchmarks/scale.py --sizes 4 --prior scale/scale.json          # predicted from an earlier run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIM = 8192
TECHNIQUES = ["graph", "fp16", "dynamic-int8", "static-int8", "int8-weight", "int4-weight", "graph+dynamic-int8"]
DEFAULT_FACTOR = 4.5  # assumed peak/size before anything was measured (issue 18 saw 4.1x for dynamic-int8)
CALIB_SAMPLES = 16


# ----------------------------------------------------------------------------------------------- the child

def child(model: str, technique: str, out: str) -> None:
    """Run one technique (a chain when it names several, joined by '+') and print one JSON line."""
    import numpy as np

    from modelpress.data import Dataset
    from modelpress.onnxutil import model_size_bytes
    from modelpress.optimizers import optimize, optimize_chain

    dim = DIM if len(sys.argv) < 6 else int(sys.argv[5])
    calib = Dataset({"x": np.random.default_rng(1).standard_normal((CALIB_SAMPLES, dim)).astype(np.float32)})
    steps = technique.split("+")
    t0 = time.perf_counter()
    res: dict = {"ok": True}
    try:
        if len(steps) == 1:
            r = optimize(model, out, steps[0], {}, calib if steps[0] == "static-int8" else None, data=calib)
            res["notes"] = r.notes[:4]
            res["repairs"] = r.repairs  # the tries below the fidelity floor count in the wall time
            res["fidelity"] = r.validation.get("worst") if r.validation else None
        else:
            rs = optimize_chain(model, out, [(s, {}) for s in steps], calib, data=calib)
            res["notes"] = rs[-1].notes[-1:]
        res["out_bytes"] = model_size_bytes(out)
    except BaseException as e:  # noqa: BLE001 - the parent records any failure
        res = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    print("RESULT " + json.dumps(res), flush=True)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(model: Path, technique: str, out: Path, budget_mb: float, dim: int, timeout_s: float) -> dict:
    root = str(Path(__file__).resolve().parents[1])  # this checkout's modelpress, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           "MODELPRESS_MEMORY_CHECK": "0"}  # measure, under this script's own budget, what optimize() would refuse
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(model), technique, str(out), str(dim)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    seen, killed, t0 = 0.0, None, time.monotonic()
    while proc.poll() is None:
        rss = _rss_mb(proc.pid)
        seen = max(seen, rss)
        if rss > budget_mb:
            killed = f"killed at {rss:,.0f} MB RSS (over the {budget_mb:,.0f} MB budget)"
        elif time.monotonic() - t0 > timeout_s:
            killed = f"killed after {timeout_s:.0f} s"
        if killed:
            proc.kill()
            break
        time.sleep(0.1)
    stdout = proc.communicate()[0]
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if killed or line is None:
        return {"ok": False, "error": killed or f"child exited {proc.returncode} without a result",
                "peak_rss_mb": round(seen), "wall_s": round(time.monotonic() - t0, 1)}
    return json.loads(line[len("RESULT "):])


# ----------------------------------------------------------------------------------------------- the table

def machine() -> dict:
    from modelpress.machine import cpu_info

    name, flags = cpu_info()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": name or platform.processor() or platform.machine(), "isa": isa, "cores": os.cpu_count(),
            "memory_gib": round(mem, 1), "python": platform.python_version()}


def available_mb() -> float:
    from modelpress.machine import memory_mib

    mib = memory_mib()["available"]
    return mib if mib is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 / 2


def markdown(rows: list[dict], info: dict, budget_mb: float) -> str:
    lines = [f"CPU: {info['cpu']} ({', '.join(info['isa'])}), {info['cores']} cores, {info['memory_gib']} GiB; "
             f"memory budget per run {budget_mb / 1024:.1f} GiB", "",
             "| model GB | technique | wall s | peak RSS GiB | peak / model | output GB | result |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = r.get("peak_rss_mb")
        ratio = f"{peak / (r['model_bytes'] / 2**20):.2f}x" if peak else ""
        out = f"{r['out_bytes'] / 1e9:.2f}" if r.get("out_bytes") else ""
        kept = next((t for t in r.get("repairs", []) if t.startswith("kept: ")), None)
        what = (f"ok ({len(r['repairs'])} tries, {kept})" if kept else "ok") if r["ok"] else \
            r.get("error", "")[:160].replace("|", "/")
        lines.append(f"| {r['model_bytes'] / 1e9:.2f} | {r['technique']} | {r.get('wall_s', '')} | "
                     f"{'' if not peak else f'{peak / 1024:.2f}'} | {ratio} | {out} | {what} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.5,1,2.4,4", help="model sizes in GB, comma-separated")
    ap.add_argument("--quick", action="store_true", help="0.5 and 1 GB only")
    ap.add_argument("--techniques", default=",".join(TECHNIQUES), help="comma-separated; A+B is a chain")
    ap.add_argument("--budget-gb", type=float, default=None,
                    help="peak memory allowed per run (default: 80%% of the memory available at start)")
    ap.add_argument("--timeout-s", type=float, default=1800)
    ap.add_argument("--dim", type=int, default=DIM, help="layer width (8192: 268 MB per layer)")
    ap.add_argument("--workdir", default=None, help="where the models are built (default: a temp folder)")
    ap.add_argument("--prior", action="append", default=[],
                    help="scale.json of an earlier run: its measured peak/size ratios predict this run's peaks")
    ap.add_argument("-o", "--output", default="scale-results", help="folder for scale.json and scale.md")
    a = ap.parse_args()
    sizes = [0.5, 1.0] if a.quick else [float(s) for s in a.sizes.split(",")]
    techniques = [t.strip() for t in a.techniques.split(",") if t.strip()]
    budget_mb = a.budget_gb * 1024 if a.budget_gb else 0.8 * available_mb()
    info = machine()
    layer_bytes = a.dim * a.dim * 4
    print(f"{info['cpu']} ({', '.join(info['isa'])}); budget {budget_mb / 1024:.1f} GiB per run", file=sys.stderr)
    out_dir = Path(a.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    # technique -> (model bytes, peak / size) measured on the largest model so far: the ratio falls with size
    # (the libraries' fixed ~0.3 GB weighs less), so the largest model's ratio is a safe guess for a larger one
    measured: dict[str, tuple[int, float]] = {}

    def record(r: dict) -> None:
        if r.get("peak_rss_mb") and r.get("ok") and r["model_bytes"] >= measured.get(r["technique"], (0, 0.0))[0]:
            measured[r["technique"]] = (r["model_bytes"], r["peak_rss_mb"] / (r["model_bytes"] / 2**20))

    for prior in a.prior:
        for r in json.loads(Path(prior).read_text()).get("rows", []):
            record(r)
    base = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="modelpress-scale-"))
    try:
        for size in sorted(sizes):
            layers = max(1, round(size * 1e9 / layer_bytes))
            folder = base / f"{size:g}GB"
            folder.mkdir(parents=True, exist_ok=True)
            model = folder / "model.onnx"
            t0 = time.perf_counter()
            from modelpress.models.synthetic import matmul_stack

            matmul_stack(model, layers, a.dim)
            model_bytes = model.stat().st_size + (folder / "model.onnx.data").stat().st_size
            print(f"built {model_bytes / 1e9:.2f} GB ({layers} layers) in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
            for tech in techniques:
                row = {"size_gb": size, "model_bytes": model_bytes, "layers": layers, "technique": tech}
                factor = measured.get(tech, (0, DEFAULT_FACTOR))[1]
                predicted = factor * model_bytes / 2**20
                if predicted > budget_mb:
                    row.update(ok=False, error=f"skipped: predicted peak {predicted / 1024:.1f} GiB ({factor:.2f}x "
                                               f"the model) exceeds the {budget_mb / 1024:.1f} GiB budget")
                else:
                    out = folder / f"out-{tech.replace('+', '-')}.onnx"
                    row.update(run_child(model, tech, out, budget_mb, a.dim, a.timeout_s))
                    for f in folder.glob("out-*"):
                        f.unlink()
                    record(row)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                (out_dir / "scale.json").write_text(json.dumps({"machine": info, "budget_mb": round(budget_mb),
                                                                "rows": rows}, indent=2) + "\n")
                (out_dir / "scale.md").write_text(markdown(rows, info, budget_mb))
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not a.workdir:
            shutil.rmtree(base, ignore_errors=True)
    print(markdown(rows, info, budget_mb))


if __name__ == "__main__":
    main()
