"""What ``secagg-client`` reports as it goes: human lines, or one JSON object per line.

With ``--events jsonl`` stdout carries only events, one JSON object per line, each with
``"event"`` (its kind) and ``"time"`` (``time.time()``), so tools (the e2e benchmark, the demo)
read them with ``json.loads`` and parse no prose; the human lines then go to stderr. Without it
the human lines are on stdout, as always. ``round`` is always the server's round index (what the
operator's ``open_round`` answers as ``index``), ``round_id`` the server's id for it.

Events, in the order they come:

``ready``            connected and enrolled: ``client_id``, ``federation``, ``name`` (+ training:
                     ``dimension``, ``accuracy``, ``resumed_rounds``; fixed vectors:
                     ``fingerprint``, ``roster``)
``trained``          (training only) local DP training for the next round is done:
                     ``local_accuracy``, ``epsilon``, ``train_s``, ``loss``, ``rounds_left``
``round_opened``     the client takes part in a round: ``round``, ``round_id``, ``mode``,
                     ``client_id``
``stage_done``       its message for a stage is posted: ``round``, ``round_id``, ``mode``,
                     ``stage``
``round_completed``  the aggregate is released to it: ``round``, ``round_id``, ``mode``,
                     ``survivors``, ``total_weight`` or ``accuracy``, ...
``round_dropped``    it was left out: ``round``, ``round_id``, ``mode``, ``reason``
``round_refused``    it refused the round (the server deviated, or the round is for another
                     model layout: a training client refuses a round already open for another
                     layout before training, so no ``trained`` comes first): same fields
``error``            the client stops on an error: ``message``, ``exit_code``
``done``             the run ended: ``completed``, ``dropped``, ``refused`` (+ training: ``epsilon``)
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["EVENT_FORMATS", "ClientEventError", "Reporter", "follow_events", "human_line",
           "next_event"]

#: values of ``secagg-client --events``
EVENT_FORMATS = ("jsonl",)


def human_line(kind: str, d: dict[str, Any]) -> str | None:
    """The human line for an event, or None (``stage_done``, ``done``: only in the events)."""
    if kind == "ready" and "dimension" in d:
        return (f"client {d['client_id']} of federation {d['federation']!r}: {d['name']}, "
                f"{d['dimension']} trainable parameters, start accuracy {d['accuracy']:.3f}")
    if kind == "ready":
        return (f"client {d['client_id']} of federation {d['federation']!r} as {d['name']} "
                f"({d['fingerprint']}), roster {d['roster'][:16]}...")
    if kind == "trained":
        return (f"trained locally: accuracy {d['local_accuracy']:.3f}, epsilon spent "
                f"{d['epsilon']:.3f}; waiting for the server's next round")
    if kind == "round_opened":
        return f"round {d['round']} ({d['mode']}) opened: taking part as client {d['client_id']}"
    if kind == "round_completed":
        line = (f"round {d['round']} ({d['mode']}): aggregate of {len(d['survivors'])} "
                "clients")
        if "accuracy" in d:
            return line + f", combined-model accuracy {d['accuracy']:.3f}"
        return line + f", total weight {d['total_weight']}, |mean|_2 = {d['mean_norm']:.4g}"
    if kind in ("round_dropped", "round_refused"):
        more = "; waiting for the next round" if d.get("rounds_left") else ""
        return f"round {d['round']}: {kind.removeprefix('round_')} ({d['reason']}){more}"
    if kind == "error":
        return f"secagg-client: error: {d['message']}"
    return None


class Reporter:
    """The ``on_event`` callback of ``secagg-client``: ``events`` is None (human lines on stdout)
    or ``"jsonl"`` (events on stdout, human lines on stderr). Errors always go to stderr."""

    def __init__(self, events: str | None = None, *, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        if events not in (None, *EVENT_FORMATS):
            raise ValueError(f"events must be one of {EVENT_FORMATS} or None, found {events!r}")
        self.jsonl = events == "jsonl"
        self._out, self._err = out, err

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        out = self._out or sys.stdout
        err = self._err or sys.stderr
        if self.jsonl:
            print(json.dumps({"event": kind, "time": time.time(), **data}), file=out, flush=True)
        line = human_line(kind, data)
        if line is not None:
            print(line, file=err if self.jsonl or kind == "error" else out, flush=True)

    def error(self, message: str, exit_code: int) -> int:
        """Report the error that ends the run; returns ``exit_code``."""
        self("error", {"message": message, "exit_code": exit_code})
        return exit_code


def follow_events(proc: subprocess.Popen[str]) -> queue.Queue[dict[str, Any]]:
    """The events of a ``secagg-client --events jsonl`` process, as they come.

    A daemon thread reads the process's stdout (text mode) into the returned queue, one dict
    per event, and ends with ``{"event": "exit", "code": <exit status>}``. For tools that drive
    client processes (the e2e benchmark, the demo) instead of parsing human lines.
    """
    events: queue.Queue[dict[str, Any]] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                events.put(json.loads(line))
            except ValueError:  # stdout carries events only; anything else is not ours
                continue
        events.put({"event": "exit", "code": proc.wait()})

    threading.Thread(target=pump, daemon=True).start()
    return events


class ClientEventError(RuntimeError):
    """A client process reported an error, exited, or went quiet before the awaited event."""


def next_event(events: queue.Queue[dict[str, Any]], kinds: tuple[str, ...], timeout: float, *,
               log: Path) -> dict[str, Any]:
    """The next event of one of ``kinds`` from :func:`follow_events`'s queue; raises
    :class:`ClientEventError` naming the process's ``log`` if it fails or exits first."""
    end = time.monotonic() + timeout
    while True:
        try:
            ev = events.get(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            raise ClientEventError(f"sent no {'/'.join(kinds)} event within {timeout:.0f} s; "
                                   f"see {log}") from None
        if ev["event"] in kinds:
            return ev
        if ev["event"] == "error":
            raise ClientEventError(f"failed: {ev['message']}; log: {log}")
        if ev["event"] == "exit":
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            raise ClientEventError(f"exited with code {ev['code']} "
                                   f"({tail[0] if tail else 'no output'}); log: {log}")
