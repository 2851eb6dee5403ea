"""Fault injection for the subprocess tests (tests/faults.py): stop a real ``sparcom`` process at a chosen point.

Python imports this module at start-up when its folder is on PYTHONPATH. It does nothing unless ``SPARCOM_FAULT``
is set, to a comma-separated list of actions:

- ``kill@batch:N``   SIGKILL inside the N-th counted batch of this process, between two decoder layers;
- ``kill@write:N``   SIGKILL after the N-th counts or checkpoint file is written but before it is renamed;
- ``kill@replace:N`` SIGKILL right after the N-th counts or checkpoint file is renamed into place;
- ``kill@complete``  SIGKILL right after the manifest that says complete is written (before the checkpoint goes);
- ``sigint@batch:N`` / ``sigterm@batch:N`` / ``sigint2@batch:N``  the signal (twice for ``sigint2``) sent to this
  process at the start of the N-th counted batch, as a person or a scheduler would;
- ``slow:S``         sleep S seconds in every counted batch (a window for signals sent from outside);
- ``hold:PATH``      wait in the first counted batch until PATH exists (a run that is surely still counting);
- ``tune-sigint@step:N`` / ``tune-sigterm@step:N``  the signal sent at the N-th optimizer step of ``sparcom tune``;
- ``sigint@condition:N`` / ``sigterm@condition:N``  the signal sent right after the causal check (``ablate``)
  has checkpointed its N-th condition in this process.

The kill is SIGKILL, exactly what ``kill -9`` does: no handler, no clean-up, no flush. A SIGINT or SIGTERM is sent
only to a process that would notice it: if the signal is ignored (a process started with it ignored keeps it so),
the process stops with exit code 97 and says why, so a test of an interrupt cannot pass because nothing listened.
"""

from __future__ import annotations

import os
import signal
import time


def _actions() -> dict[str, str]:
    plan = os.environ.get("SPARCOM_FAULT", "")
    return dict(item.split("@", 1) if "@" in item else (item.split(":", 1)[0], item.split(":", 1)[1])
                for item in plan.split(",") if item)


#: The exit code of a process asked to interrupt itself while it ignores the signal.
IGNORED_EXIT = 97


def _send(name: str) -> None:
    signum = getattr(signal, name)
    if signum != signal.SIGKILL and signal.getsignal(signum) == signal.SIG_IGN:
        os.write(2, f"fault injection: {name} is ignored in this process; the test cannot interrupt it\n".encode())
        os._exit(IGNORED_EXIT)
    os.kill(os.getpid(), signum)


def _install(actions: dict[str, str]) -> None:
    counts = {"batch": 0, "write": 0, "replace": 0, "step": 0, "condition": 0}

    def at(key: str, point: str) -> bool:
        return actions.get(key) == point

    if any(key.startswith("tune-") for key in actions):
        import torch

        original_step = torch.optim.AdamW.step

        def step(self, *args, **kwargs):
            counts["step"] += 1
            for key, name in (("tune-sigint", "SIGINT"), ("tune-sigterm", "SIGTERM")):
                if at(key, f"step:{counts['step']}"):
                    _send(name)
            return original_step(self, *args, **kwargs)

        torch.optim.AdamW.step = step
        return

    if any(value.startswith("condition:") for value in actions.values()):
        from sparcom.causal.checkpoint import ConditionStore

        original_condition = ConditionStore.save

        def save_condition(self, *args, **kwargs):
            result = original_condition(self, *args, **kwargs)
            counts["condition"] += 1
            for key, name in (("sigint", "SIGINT"), ("sigterm", "SIGTERM")):
                if at(key, f"condition:{counts['condition']}"):
                    _send(name)
            return result

        ConditionStore.save = save_condition
        return

    import safetensors.numpy

    from sparcom.artifacts import run as artifacts
    from sparcom.models.sites import get_path
    from sparcom.profile import runner

    original_batch = runner.Profiler._count_batch

    def count_batch(self, batch, rows):
        counts["batch"] += 1
        point = f"batch:{counts['batch']}"
        for key, name in (("sigint", "SIGINT"), ("sigterm", "SIGTERM"), ("sigint2", "SIGINT")):
            if at(key, point):
                _send(name)
                if key == "sigint2":
                    _send(name)
        if "slow" in actions:
            time.sleep(float(actions["slow"]))
        if "hold" in actions and counts["batch"] == 1:
            while not os.path.exists(actions["hold"]):
                time.sleep(0.05)
        handle = None
        if at("kill", point):
            layers = get_path(self.sites.backbone, self.sites.family.layers)
            handle = layers[len(layers) - 1].register_forward_pre_hook(lambda *a: _send("SIGKILL"))
        try:
            return original_batch(self, batch, rows)
        finally:
            if handle is not None:
                handle.remove()

    runner.Profiler._count_batch = count_batch

    original_save = safetensors.numpy.save_file

    def save_file(*args, **kwargs):
        result = original_save(*args, **kwargs)
        counts["write"] += 1
        if at("kill", f"write:{counts['write']}"):
            _send("SIGKILL")
        return result

    safetensors.numpy.save_file = save_file

    original_write = artifacts.write_counts_atomic

    def write_counts_atomic(*args, **kwargs):
        result = original_write(*args, **kwargs)
        counts["replace"] += 1
        if at("kill", f"replace:{counts['replace']}"):
            _send("SIGKILL")
        return result

    artifacts.write_counts_atomic = write_counts_atomic

    original_json = artifacts.write_json_atomic

    def write_json_atomic(path, data):
        original_json(path, data)
        if at("kill", "complete") and isinstance(data, dict) and data.get("complete"):
            _send("SIGKILL")

    artifacts.write_json_atomic = write_json_atomic


_plan = _actions()
if _plan:
    _install(_plan)
