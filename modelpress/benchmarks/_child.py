"""The measuring process. Sets affinity before onnxruntime is imported, so its thread pool stays on the given cores."""

from __future__ import annotations

import json
import os
import sys
import time

from modelpress.machine import vm_mib  # no runtime import: affinity is set before onnxruntime loads


def run(job: dict) -> dict:
    prof, cfg = job["profile"], job["config"]
    if prof["cores"] is not None:
        os.sched_setaffinity(0, prof["cores"])

    import numpy as np

    from modelpress.data import Dataset, batch_size_for, load_npz, synthetic
    from modelpress.errors import ModelpressError
    from modelpress.benchmarks.profiler import runner_options
    from modelpress.runtimes import RUNNERS, get_runner

    if job.get("runner_path"):
        RUNNERS.register_path(cfg["runner"], job["runner_path"])  # type: ignore[attr-defined]
    try:
        runner_cls = get_runner(cfg["runner"])
        options = runner_options(runner_cls, cfg, prof["intra_op_threads"], prof["inter_op_threads"])
        batch = cfg["batch_size"]
        data: Dataset | None = load_npz(job["inputs"]) if job["inputs"] else None

        base_rss = vm_mib("VmRSS")
        t0 = time.perf_counter()
        runner = runner_cls(job["model"], options)
        runner.load()
        t_load = time.perf_counter()
        specs = runner.inputs
        fixed = batch_size_for(specs, batch)
        if fixed != batch:
            raise ModelpressError(f"the model has a fixed batch of {fixed}; profile it with --batch-size {fixed}")
        if data is None:
            data = synthetic(specs, batch_size=batch, samples=8)
        else:
            data.check_against(specs, "profiling inputs")
            if len(data) < batch:
                raise ModelpressError(f"profiling inputs hold {len(data)} samples, fewer than --batch-size {batch}")
        feeds = [b for b in data.batches(batch) if len(next(iter(b.values()))) == batch]
        runner.infer(feeds[0])  # the checked call: every feed below has the same names, dtypes and shapes
        t_first = time.perf_counter()
        infer = runner.infer_impl  # so the timed loop measures the runtime, not our feed checks

        for i in range(cfg["warmup"]):
            infer(feeds[i % len(feeds)])
        from modelpress.benchmarks.energy import EnergyMeter  # hardware energy counters, where readable

        meter = EnergyMeter.open()
        if meter.available:
            meter.start()  # read just before the timed loop (outside every sample)
        samples = []
        deadline = None if cfg["duration_s"] is None else time.perf_counter() + cfg["duration_s"]
        clock = time.perf_counter_ns
        for i in range(cfg["iterations"] if deadline is None else sys.maxsize):
            f = feeds[i % len(feeds)]
            s = clock()
            infer(f)
            samples.append((clock() - s) / 1e6)
            if deadline is not None and (len(samples) >= cfg["iterations"] or time.perf_counter() >= deadline):
                break
        energy = meter.result(len(samples))  # read just after it
        peak = vm_mib("VmHWM")
        ops = runner.op_breakdown(feeds, cfg["op_breakdown_iterations"]) \
            if cfg["op_breakdown"] and runner_cls.supports_op_profile else None
        runner.close()
    except ModelpressError as e:
        return {"error": str(e)}

    from modelpress.benchmarks.profiler import LatencyStats

    return {
        "model": job["model"], "runner": cfg["runner"], "profile": prof, "batch_size": batch, "inputs": "",
        "stats": LatencyStats.from_samples(samples, batch).__dict__,
        "load_ms": round((t_load - t0) * 1000, 3), "cold_start_ms": round((t_first - t0) * 1000, 3),
        "peak_rss_mb": round(peak, 1), "model_rss_mb": round(max(peak - base_rss, 0.0), 1),
        "samples_ms": [round(float(x), 4) for x in np.asarray(samples)], "op_breakdown": ops,
        "affinity": sorted(os.sched_getaffinity(0)), "energy": energy,
    }


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    result = run(job)
    tmp = job["result"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, job["result"])


if __name__ == "__main__":
    main()
