"""Does `modelpress profile` measure what a hand-written timing loop measures?

For one model and one thread on core 0, alternately run (a) modelpress's profiler
(edge-1core preset) and (b) a plain `InferenceSession.run` loop timed with
perf_counter in a fresh process pinned the same way, several rounds each,
interleaved so machine drift hits both. Prints both medians and their ratio.

    python benchmarks/profiler_vs_plain_loop.py [MODEL.onnx] [--rounds 5] [--iterations 300]

Without MODEL it exports an (untrained) DigitsCNN, the demo's architecture.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PLAIN_LOOP = r"""
import os, sys, time, json
os.sched_setaffinity(0, {0})
import numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
z = np.load(sys.argv[2]); x = z[z.files[0]][:1]
feed = {sess.get_inputs()[0].name: x}
for _ in range(int(sys.argv[4])): sess.run(None, feed)
t = []
for _ in range(int(sys.argv[3])):
    s = time.perf_counter(); sess.run(None, feed); t.append((time.perf_counter() - s) * 1000)
print(json.dumps({"p50": float(np.median(t)), "mean": float(np.mean(t))}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()

    import numpy as np

    from modelpress.benchmarks.presets import PRESETS
    from modelpress.benchmarks.profiler import ProfileConfig, profile_model
    from modelpress.data import Dataset

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from modelpress.exporters import ExportConfig, export_onnx
            from modelpress.models.digits import factory

            m, ex = factory()
            model = str(Path(tmp) / "digits.onnx")
            export_onnx(m, ex, model, ExportConfig(exporter="torchscript"))
        import onnx

        inp = onnx.load(model).graph.input[0]
        shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        data = Dataset({inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)})
        npz = data.save(Path(tmp) / "x.npz")
        cfg = ProfileConfig(iterations=args.iterations, warmup=args.warmup)
        rows = []
        for i in range(args.rounds):
            prof = profile_model(model, PRESETS["edge-1core"], cfg, data=data)
            out = subprocess.run([sys.executable, "-c", PLAIN_LOOP, model, str(npz), str(args.iterations), str(args.warmup)],
                                 capture_output=True, text=True, check=True)
            plain = json.loads(out.stdout)
            rows.append((prof.stats.p50_ms, plain["p50"]))
            print(f"round {i + 1}: modelpress p50 {prof.stats.p50_ms:.4f} ms | plain loop p50 {plain['p50']:.4f} ms | "
                  f"ratio {prof.stats.p50_ms / plain['p50']:.3f}", flush=True)
    mp = statistics.median(r[0] for r in rows)
    pl = statistics.median(r[1] for r in rows)
    print(f"median over {args.rounds} rounds: modelpress {mp:.4f} ms, plain loop {pl:.4f} ms, "
          f"modelpress/plain = {mp / pl:.3f} ({(mp / pl - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
