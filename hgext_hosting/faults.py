"""Named fault points that only tests switch on, through ``HG_HOSTING_FAULTS``.

``HG_HOSTING_FAULTS="pushlog-after-commit=kill,repo-rename-after-move"`` makes
:func:`point` kill the process with SIGKILL at the first point and raise
:class:`FaultInjected` at the second.  ``NAME=sleep:0.5`` sleeps instead.
Unset (always, outside tests) a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "HG_HOSTING_FAULTS"


class FaultInjected(RuntimeError):
    """Raised at a fault point switched on with the ``raise`` action."""


def _active() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    faults = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        faults[name] = action or "raise"
    return faults


def point(name: str) -> None:
    """Do what ``HG_HOSTING_FAULTS`` asks at fault point ``name`` (usually nothing)."""
    if ENV not in os.environ:
        return
    action = _active().get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
    else:
        raise FaultInjected(f"fault injected at {name}")
