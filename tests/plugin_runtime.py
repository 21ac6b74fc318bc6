"""A runtime added from outside modelpress, as a user would: one class and one `register_runner` call. It is ONNX
Runtime with graph optimizations off and one thread (a real runtime, not a mock), under its own name."""

from __future__ import annotations

from modelpress.runtimes import register_runner
from modelpress.runtimes.ort import OrtRunner


@register_runner
class PlainOrtRunner(OrtRunner):
    name = "test-plain-ort"
    description = "ONNX Runtime, CPU, no graph optimizations (a plugin defined by the tests)"

    def session_options(self, profile_prefix=None):
        so = super().session_options(profile_prefix)
        so.graph_optimization_level = type(so.graph_optimization_level).ORT_DISABLE_ALL
        return so
