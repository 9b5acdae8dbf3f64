"""Fault injection for the tests' training subprocesses (the library itself has no test hooks).

With this folder on PYTHONPATH, Python imports this file at start-up. When ``BRIDGEATTN_TEST_FAULT`` is set, it
wraps ``bridgeattn.engine.loop.optimizer_step`` (once ``bridgeattn.engine.train`` is imported) so that, after
optimizer step STEP, the process does ACTION; on the first torchrun attempt only, and only on RANK when given::

    BRIDGEATTN_TEST_FAULT=ACTION@STEP[:RANK]     e.g. SIGKILL@6, SIGKILL@6:1, SIGTERM@6, pause@2

``SIG*`` sends that signal to the process itself. ``pause`` writes ``$BRIDGEATTN_TEST_MARKERS/paused-RANK``
(holding the pid) and waits there, up to 120 s, until the run is asked to stop (SIGTERM, SIGUSR1, Ctrl-C), so a
test can signal or kill a launcher while its workers are known to be mid-epoch.
"""
from __future__ import annotations

import os

FAULT = os.environ.get("BRIDGEATTN_TEST_FAULT")

if FAULT and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    import importlib.abc
    import importlib.util
    import signal
    import sys
    import time
    from pathlib import Path

    ACTION, _, WHERE = FAULT.partition("@")
    STEP, _, RANK = WHERE.partition(":")

    def _act(step: int) -> None:
        if step != int(STEP) or (RANK and RANK != os.environ.get("RANK", "0")):
            return
        if ACTION != "pause":
            os.kill(os.getpid(), getattr(signal, ACTION))
            return
        marker = Path(os.environ["BRIDGEATTN_TEST_MARKERS"]) / f"paused-{os.environ.get('RANK', '0')}"
        marker.write_text(str(os.getpid()))
        stop = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)  # the engine's StopRequest
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not getattr(stop, "requested", False):
            time.sleep(0.02)

    def _patch(module) -> None:
        module = sys.modules["bridgeattn.engine.loop"]  # imported by the training module
        real = module.optimizer_step

        def optimizer_step(run, *args, **kwargs):
            found = real(run, *args, **kwargs)
            _act(run.step)
            return found

        module.optimizer_step = optimizer_step

    class _PatchOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "bridgeattn.engine.train":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            exec_module = spec.loader.exec_module

            def patched(module) -> None:
                exec_module(module)
                _patch(module)

            spec.loader.exec_module = patched
            return spec

    sys.meta_path.insert(0, _PatchOnImport())
