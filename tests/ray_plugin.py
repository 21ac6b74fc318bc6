"""Techniques defined by the tests, registered as a user's plugin is (one class, one `register_pass`), for the Ray
executor's tests: a Ray worker learns them from the driver's registry (modelpress.study.stages passes their
"module:Class" along), as the profiler's child learns a plugin runtime.

- `test-crash-once`: dynamic INT8, but its first attempt (no marker file yet) writes half a model to its temp
  output and kills its own process with SIGKILL, as an out-of-memory kill or a lost node would;
- `test-always-fails`: raises a ModelpressError, as a technique that cannot handle a model does."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from modelpress.errors import ModelpressError
from modelpress.optimizers.ort_quant import DynamicInt8, DynamicInt8Config
from modelpress.optimizers.registry import register_pass


@dataclass
class CrashOnceConfig(DynamicInt8Config):
    marker: str = ""  # the file whose absence means "first attempt: die"


@register_pass
class CrashOnce(DynamicInt8):
    name = "test-crash-once"
    summary = "dynamic INT8 whose first attempt kills its own process mid-write (a test plugin)"
    config_cls = CrashOnceConfig

    def run(self, model_in, model_out, calib=None):
        marker = self.config.marker
        if marker and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            with open(model_out, "wb") as f:  # half a model in the temp file the caller would rename
                f.write(b"\x08\x07half a model")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return super().run(model_in, model_out, calib)


@register_pass
class AlwaysFails(DynamicInt8):
    name = "test-always-fails"
    summary = "fails on every model (a test plugin)"

    def run(self, model_in, model_out, calib=None):
        raise ModelpressError("this technique cannot handle the model (a test plugin that always fails)")
