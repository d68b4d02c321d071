"""End to end over the project's own server: a secure round vs a plaintext round, real processes.

One server process (``python -m secagg_server``) on 127.0.0.1 with a temporary data directory,
and one ``secagg-client`` process (``python -m secagg_clients``) per client, each with a random
float32 update, its own identity and the federation's roster
(:func:`secagg_clients.enrolment.enrol_locally`), so masking rounds are the
service's active (malicious-server) rounds, as deployed. The same clients
take part in alternating secure and ``plain`` rounds (the plain mode sums float32 uploads with no
protection: same server, store, HTTP path and runtime), so the ratio isolates what protection
costs. A round's time runs from the operator's "open round" request to the moment the last
client holds the released aggregate (clients stamp it with ``time.time()`` on the same machine;
for CKKS that includes decrypting it, which happens on the clients).

The bench follows each client through its events (``secagg-client --events jsonl``: one JSON
object per line on stdout; the human lines go to the client's log). A client that drops out of
a round (a missed stage deadline, a refused message) or refuses it reports why; that
round's time would measure the deadline, not the protocol, and its aggregate leaves the dropout
out, so it is left out of the medians and the error, and listed in ``E2EResult.dropouts`` (with
a warning). If every timed round of a kind lost a client, the bench fails, naming them.

The secure mode is ``masking`` or ``ckks`` (COMPACT preset). The error against the plaintext sum
needs the secure sum: for masking the bench rebuilds it from the released aggregate, for CKKS
only the clients can decrypt, so after the timed rounds one more, untimed, CKKS round runs and
the clients write its mean (``secagg-client --out``) for the bench to compare.

The server and the clients run as separate processes, as deployed; this module plays the
operator (:mod:`secagg_server.operator`) and speaks HTTP to the server.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from secagg.contract import Header, ReleasedAggregate, Route
from secagg_clients.enrolment import enrol_locally
from secagg_clients.events import ClientEventError, follow_events, next_event
from secagg_server.operator import ServerProcess, create_federation

__all__ = ["E2EResult", "run_e2e_bench"]

AVAILABLE_MODES = ("masking", "ckks")
#: The secure round's options per mode (plain rounds take ``vector_length`` only).
_SECURE_OPTIONS: dict[str, dict[str, Any]] = {"masking": {"clip": 1.0}, "ckks": {"value_bound": 1.0}}


@dataclass
class E2EResult:
    secure_round_s: float
    plain_round_s: float
    secure_rounds_s: list[float]
    plain_rounds_s: list[float]
    max_abs_error_vs_plaintext: float
    survivors: int
    #: Rounds some client dropped out of: {"index", "mode", "timed", "clients", "reasons"}.
    dropouts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.secure_round_s / self.plain_round_s


class _Client:
    """One ``secagg-client`` process; its events (JSON lines on stdout) read on a thread, its
    human lines and errors in ``log``."""

    def __init__(self, url: str, token_file: Path, update: Path, rounds: int, report: Path,
                 identity: Path, roster: Path, log: Path, out: Path | None = None) -> None:
        cmd = [sys.executable, "-m", "secagg_clients", "--server", url, "--token-file", str(token_file),
               "--identity", str(identity), "--roster", str(roster), "--update",
               str(update), "--rounds", str(rounds), "--json", str(report), "--events", "jsonl"]
        if out is not None:
            cmd += ["--out", str(out)]
        self.log = log
        with open(log, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        self.events: queue.Queue[dict[str, Any]] = follow_events(self.proc)


    def wait_for(self, kinds: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """The next event of one of ``kinds``; raises if the client fails or exits first."""
        try:
            ev: dict[str, Any] = next_event(self.events, kinds, timeout, log=self.log)
        except ClientEventError as exc:
            raise RuntimeError(f"client {exc}") from None
        return ev

    def wait_round(self, index: int, timeout: float) -> str | None:
        """Wait for the client's outcome of round ``index``: None if it got the aggregate, else
        why it dropped out or refused it."""
        while True:
            ev = self.wait_for(("round_completed", "round_dropped", "round_refused"), timeout)
            if ev["round"] == index:
                return None if ev["event"] == "round_completed" else str(ev["reason"])


def _masking_sum(meta: ReleasedAggregate, payload: bytes, config: dict[str, Any]) -> np.ndarray:
    from secagg.masking import Aggregate, MaskingConfig

    assert meta.total_weight is not None, "a masking result carries its total weight"
    agg = Aggregate(total=np.frombuffer(payload, "<u4").astype(np.uint32),
                    total_weight=int(meta.total_weight), survivors=meta.survivors,
                    dropped=meta.dropped, config=MaskingConfig.from_dict(config))
    return agg.weighted_sum()


def run_e2e_bench(*, clients: int, params: int, repeats: int = 3, warmup: int = 1, seed: int = 0,
                  workdir: str | None = None, timeout: float = 300.0,
                  mode: str = "masking") -> E2EResult:
    """Alternate ``repeats`` secure (``mode``) and plain rounds after ``warmup`` untimed pairs
    (first-use costs in fresh processes); medians of the round times."""
    from secagg.errors import InvalidParameter

    if mode not in AVAILABLE_MODES:
        raise InvalidParameter(f"mode {mode!r} is not one of {AVAILABLE_MODES}")
    # CKKS: one trailing secure round whose mean every client writes with --out (see above)
    check_round = mode == "ckks"
    with tempfile.TemporaryDirectory(prefix="secagg-e2e-", dir=workdir) as tmp:
        root = Path(tmp)
        data = root / "data"
        enrolled = enrol_locally(root / "enterprises", "bench",
                                 [f"client-{i}" for i in range(clients)])
        tokens = create_federation(data, "bench", enrolled.roster_path)
        rng = np.random.default_rng(seed)  # before the server starts: a bad seed leaves nothing
        updates = [rng.uniform(-0.5, 0.5, params).astype(np.float32) for _ in range(clients)]
        server = ServerProcess(data, allow_plain=True).start()
        procs: list[_Client] = []
        try:
            for i, token in enumerate(tokens["client_tokens"]):
                tok = root / f"token-{i}"
                tok.write_text(token)
                os.chmod(tok, 0o600)
                np.save(root / f"update-{i}.npy", updates[i])
                procs.append(_Client(server.url, tok, root / f"update-{i}.npy",
                                     2 * (repeats + warmup) + check_round, root / f"report-{i}.json",
                                     enrolled.identity_paths[i], enrolled.roster_path,
                                     root / f"client-{i}.log",
                                     out=root / f"mean-{i}.npy" if check_round else None))
            for c in procs:
                c.wait_for(("ready",), timeout)
            time.sleep(0.3)  # let every client's long poll for the next round arrive
            http = httpx.Client(base_url=server.url, timeout=60.0,
                                headers={"Authorization": f"Bearer {tokens['operator_token']}"})
            opened: dict[int, tuple[str, float, dict[str, Any]]] = {}  # index -> mode, t0, info
            dropouts: list[dict[str, Any]] = []
            plan = [(rep >= warmup, kind) for rep in range(repeats + warmup) for kind in (mode, "plain")]
            plan += [(False, mode)] * check_round
            for timed, kind in plan:
                options = {"vector_length": params, **(_SECURE_OPTIONS[mode] if kind == mode else {})}
                t0 = time.time()
                resp = http.post(Route.ROUNDS, json={
                    "mode": kind, "stage_timeout_s": timeout, "options": options})
                resp.raise_for_status()
                info = resp.json()
                if timed:
                    opened[info["index"]] = (kind, t0, info)
                # a round with a silent client waits out stage deadlines (``timeout`` each)
                reasons = {i: why for i, c in enumerate(procs)
                           if (why := c.wait_round(info["index"], 5 * timeout)) is not None}
                if reasons:
                    dropouts.append({"index": info["index"], "mode": kind, "timed": timed,
                                     "clients": sorted(reasons), "reasons": reasons})
            lost = {d["index"] for d in dropouts}
            results = {}
            for idx, (_, _, info) in opened.items():
                if idx in lost:  # its aggregate leaves a client out (or there is none)
                    continue
                r = http.get(Route.result(info["round_id"]))
                r.raise_for_status()
                results[idx] = (ReleasedAggregate.from_header(r.headers[Header.RESULT]), r.content)
            http.close()
            for c in procs:
                c.proc.wait(timeout=timeout)
        finally:
            for c in procs:
                if c.proc.poll() is None:
                    c.proc.kill()
            server.stop()
        done: dict[int, float] = {}
        for i in range(clients):
            for entry in json.loads((root / f"report-{i}.json").read_text())["rounds"]:
                if entry.get("dropped") or "received_at" not in entry:
                    continue  # reported from the client's own event above (with its reason)
                done[entry["index"]] = max(done.get(entry["index"], 0.0), entry["received_at"])
        if dropouts:
            warnings.warn("e2e bench: client(s) dropped out of round(s) "
                          + "; ".join(f"{d['index']} ({d['mode']}{'' if d['timed'] else ', untimed'}"
                                      f"): clients {d['clients']}: "
                                      + ", ".join(f"{i}: {w}" for i, w in d["reasons"].items())
                                      for d in dropouts)
                          + "; those rounds are left out of the medians and the error",
                          RuntimeWarning, stacklevel=2)
        times: dict[str, list[float]] = {mode: [], "plain": []}
        sums: dict[str, list[np.ndarray]] = {mode: [], "plain": []}
        survivors = clients
        for idx, (kind, t0, info) in sorted(opened.items()):  # warm-up rounds are not in opened
            if idx in lost:
                continue
            times[kind].append(done[idx] - t0)
            meta, payload = results[idx]
            if kind == "plain":
                sums[kind].append(np.frombuffer(payload, "<f4").astype(np.float64))
                continue
            survivors = min(survivors, len(meta.survivors))
            if kind == "masking":
                sums[kind].append(_masking_sum(meta, payload, info["config"]))
        if check_round:  # each client's decrypted mean of the untimed last round, as a sum
            for i in range(clients):
                last = json.loads((root / f"report-{i}.json").read_text())["rounds"][-1]
                if last["dropped"] or last["mode"] != mode:
                    raise RuntimeError(f"client {i} did not complete the {mode} check round: {last}")
                sums[mode].append(np.load(root / f"mean-{i}.npy") * last["total_weight"])
        for kind in (mode, "plain"):
            if not times[kind]:
                raise RuntimeError(f"e2e bench: every timed {kind} round lost a client, so none "
                                   f"measures a whole round: {dropouts}")
        err = max(float(np.max(np.abs(s - p))) for s in sums[mode] for p in sums["plain"])
    return E2EResult(secure_round_s=statistics.median(times[mode]),
                     plain_round_s=statistics.median(times["plain"]),
                     secure_rounds_s=times[mode], plain_rounds_s=times["plain"],
                     max_abs_error_vs_plaintext=err, survivors=survivors, dropouts=dropouts)
