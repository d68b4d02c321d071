"""The smart-city demo: a real server process and one client process per enterprise.

What runs (nothing is simulated): each enterprise's long-term identity (one identity file per
enterprise directory) and the federation's roster (:func:`secagg_clients.enrolment.enrol_locally`:
on one machine, the exchange of public entries is skipped, not the checks), ``secagg-server`` on
127.0.0.1 with a fresh SQLite store, a federation registered with that roster and one bearer
token per enterprise, and one ``secagg-client`` process per enterprise (energy utility,
residential security firm, city operations centre), each training the MiniLM + LoRA + sensor
model with DP-SGD on its own shipped dataset and protecting its update with the chosen mode.
This module is the operator: it opens the rounds and reads what the server stored. It never
sees an update, except through the clients' audit files (``--audit-dir``), which exist so the
demo can show that the released aggregate equals the plaintext sum and that no plaintext update
reached the server's disk.

The server and every enterprise run as separate processes (``python -m secagg_server``,
``python -m secagg_clients``), as they would on separate machines; this module only plays the
operator (:mod:`secagg_server.operator`).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from secagg.errors import InvalidParameter, SecAggError
from secagg_clients.enrolment import enrol_locally
from secagg_clients.events import ClientEventError, follow_events, next_event
from secagg_server.operator import Operator, ServerProcess, create_federation

__all__ = ["ENTERPRISES", "DemoConfig", "DemoFailed", "run_demo"]

ENTERPRISES = ("energy_utility", "residential_security", "city_operations")
MODES = ("masking", "ckks", "ckks-threshold")


class DemoFailed(SecAggError):
    """A demo process failed; the message says which and where its log is."""


@dataclass(frozen=True)
class DemoConfig:
    mode: str = "masking"
    clients: int = 3
    rounds: int = 2
    epsilon: float = 8.0
    epochs: int = 5
    encoder: str = "minilm"
    threads_per_client: int = 1
    stage_timeout_s: float = 120.0
    workdir: str | None = None  # kept when given; a temporary directory otherwise
    progress: bool = True
    log: Callable[[str], None] = field(default=print)
    distributed_dp: bool = False  # client-level DP: Skellam noise inside the masked sum
    client_noise: float = 1.0
    client_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidParameter(f"--mode must be one of {list(MODES)}, found {self.mode!r}")
        if not 2 <= self.clients <= len(ENTERPRISES):
            raise InvalidParameter(f"--clients must be 2 or 3 (the shipped enterprises are "
                                   f"{', '.join(ENTERPRISES)}), found {self.clients}")
        if not 1 <= self.rounds <= 20:
            raise InvalidParameter(f"--rounds must be in [1, 20], found {self.rounds}")
        if not 0 < self.epsilon <= 100:
            raise InvalidParameter(f"--epsilon must be in (0, 100], found {self.epsilon}")
        if not 1 <= self.epochs <= 50:
            raise InvalidParameter(f"--epochs must be in [1, 50], found {self.epochs}")
        if self.distributed_dp and self.mode != "masking":
            raise InvalidParameter("--distributed-dp adds noise inside the masked sum: use it "
                                   "with --mode masking")
        for what, v in (("--client-noise", self.client_noise), ("--client-clip", self.client_clip)):
            if not 0 < v < float("inf"):
                raise InvalidParameter(f"{what} must be a finite number > 0, found {v}")


class _ClientProcess:
    """One ``secagg-client --events jsonl`` process: its events (one JSON object per line on
    stdout) are read on a thread; its human lines and errors (stderr) go to ``log_path``."""

    def __init__(self, name: str, cmd: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        with open(log_path, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                         env=env)
        self.events: queue.Queue[dict[str, Any]] = follow_events(self.proc)


    def next_event(self, want: str, timeout: float) -> dict[str, Any]:
        """The next event of kind ``want`` (or 'round_dropped' / 'round_refused'); raises if
        the process reports an error or dies first."""
        try:
            ev: dict[str, Any] = next_event(self.events, (want, "round_dropped", "round_refused"),
                                            timeout, log=self.log_path)
        except ClientEventError as exc:
            raise DemoFailed(f"{self.name}'s client {exc}") from None
        return ev


#: what the server holds during a round, per mode (the report's "server saw" line)
_HELD = {
    "masking": "masked vectors (uniform mod 2^b)",
    "ckks": "CKKS ciphertexts (no secret key)",
    "ckks-threshold": "threshold CKKS uploads, each under its sender's own secret, and sealed "
                      "key shares it cannot open (no key anywhere)",
}


def _round_options(cfg: DemoConfig, dimension: int) -> dict[str, Any]:
    if cfg.mode == "masking":
        # L-inf clip 2 with 22-bit fixed point: a step of ~1e-6, far below DP noise; LoRA updates
        # after a DP round are well inside +-2, so nothing is clipped
        opts: dict[str, Any] = {"vector_length": dimension, "clip": 2.0, "value_bits": 22}
        if cfg.distributed_dp:
            opts.update(dp_noise_multiplier=cfg.client_noise, dp_l2_clip=cfg.client_clip)
        return opts
    return {"vector_length": dimension, "value_bound": 2.0}


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole demo; returns the report (what the table and ``--json`` show)."""
    from tqdm.auto import tqdm

    t_start = time.monotonic()
    own_tmp = cfg.workdir is None
    root = Path(tempfile.mkdtemp(prefix="secagg-demo-") if own_tmp else str(cfg.workdir))
    if not own_tmp and root.exists() and any(root.iterdir()):
        raise InvalidParameter(f"--workdir {str(root)!r} is not empty; the demo needs a fresh "
                               "directory (its ledgers and server store start empty)")
    root.mkdir(parents=True, exist_ok=True)
    names = ENTERPRISES[: cfg.clients]
    server_dir, audit = root / "server", root / "audit"
    enrolled = enrol_locally(root / "enterprises", "smart-city", names)
    tokens = create_federation(server_dir, "smart-city", enrolled.roster_path)
    server = ServerProcess(server_dir, log_level="warning").start()
    procs: list[_ClientProcess] = []
    bar = tqdm(total=cfg.clients * (1 + cfg.rounds) + cfg.rounds, desc="demo",
               disable=not cfg.progress, unit="step")
    try:
        for i, name in enumerate(names):
            tok = root / f"{name}.token"
            tok.write_text(tokens["client_tokens"][i])
            os.chmod(tok, 0o600)
            cmd = [sys.executable, "-m", "secagg_clients", "--server", server.url, "--token-file",
                   str(tok), "--identity", str(enrolled.identity_paths[i]), "--roster",
                   str(enrolled.roster_path), "--enterprise", name, "--ledger",
                   str(root / f"{name}.ledger.json"),
                   "--rounds", str(cfg.rounds), "--epsilon", str(cfg.epsilon), "--epochs",
                   str(cfg.epochs), "--encoder", cfg.encoder, "--threads",
                   str(cfg.threads_per_client), "--state-dir", str(root / "state"),
                   "--audit-dir", str(audit), "--json", str(root / f"{name}.report.json"),
                   "--events", "jsonl",
                   *(["--min-client-noise", str(cfg.client_noise)] if cfg.distributed_dp
                     else [])]
            procs.append(_ClientProcess(name, cmd, root / f"{name}.log"))
        bar.set_description("loading models")
        ready = {}
        for p in procs:
            ready[p.name] = p.next_event("ready", 600)
            bar.update(1)
        dims = {ev["dimension"] for ev in ready.values()}
        if len(dims) != 1:
            raise DemoFailed(f"enterprises built different models (dimensions {sorted(dims)})")
        dimension = dims.pop()
        released: list[dict[str, Any]] = []
        with Operator(server.url, tokens["operator_token"]) as operator:
            _run_rounds(cfg, procs, operator, dimension, released, bar)
        for p in procs:
            p.proc.wait(timeout=120)
        bar.set_description("done")
    finally:
        bar.close()
        for p in procs:
            if p.proc.poll() is None:
                p.proc.kill()
        server.stop()
    report = _report(cfg, root, names, released, server_dir, audit, dimension)
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    report["workdir"] = None if own_tmp else str(root)
    if own_tmp:  # kept on failure: the error names the logs in it
        shutil.rmtree(root, ignore_errors=True)
    return report


def _run_rounds(cfg: DemoConfig, procs: list[_ClientProcess], operator: Operator, dimension: int,
                released: list[dict[str, Any]], bar: Any) -> None:
    """The operator's part: open each round once every enterprise has trained, await its end."""
    for r in range(cfg.rounds):
        bar.set_description(f"round {r + 1}/{cfg.rounds}: DP training")
        for p in procs:
            p.next_event("trained", 1800)
            bar.update(1)
        bar.set_description(f"round {r + 1}/{cfg.rounds}: {cfg.mode} aggregation")
        info = operator.open_round(cfg.mode, _round_options(cfg, dimension),
                                   stage_timeout_s=cfg.stage_timeout_s)
        for p in procs:
            p.next_event("round_completed", cfg.stage_timeout_s * 6)
        status = operator.wait(info["round_id"], timeout=cfg.stage_timeout_s * 6)
        if status.get("status") == "done":  # the released metadata, read as the contract's type
            status["released"] = operator.result(info["round_id"])[0]
        status.setdefault("config", info.get("config", {}))
        released.append(status)
        bar.update(1)


def _report(cfg: DemoConfig, root: Path, names: tuple[str, ...], released: list[dict[str, Any]],
            server_dir: Path, audit: Path, dimension: int) -> dict[str, Any]:
    reports = {n: json.loads((root / f"{n}.report.json").read_text()) for n in names}
    by_id = {rep["client_id"]: n for n, rep in reports.items()}
    inspect = json.loads(subprocess.run(
        [sys.executable, "-m", "secagg_server", "inspect", "--data", str(server_dir), "--json"],
        check=True, capture_output=True, text=True, timeout=60).stdout)
    # the released aggregate (as each client decoded it) against the plaintext sum of the same
    # clients' updates; every client must also have decoded the same aggregate
    max_err, completed = 0.0, 0
    for status in released:
        if status.get("status") != "done":
            continue
        completed += 1
        idx, survivors = status["index"], status["released"].survivors
        plain = sum(np.load(audit / f"update-{by_id[c]}-round{idx}.npy").astype(np.float64)
                    for c in survivors)
        decoded = [np.load(audit / f"released-{by_id[c]}-round{idx}.npy") for c in survivors]
        for d in decoded:
            max_err = max(max_err, float(np.max(np.abs(d - plain))))
    # attack on the server's disk: does any stored file hold a window of any plaintext update?
    found = _plaintext_on_disk(server_dir, [np.load(f) for f in sorted(audit.glob("update-*.npy"))])
    pooled_n = sum(r["test_records"] for r in reports.values())
    last = {n: next((x for x in reversed(r["rounds"]) if x["accuracy"] is not None), None)
            for n, r in reports.items()}
    combined = {n: (x["accuracy"] if x else None) for n, x in last.items()}
    pooled = (sum(combined[n] * reports[n]["test_records"] for n in names) / pooled_n
              if all(v is not None for v in combined.values()) else None)
    client_level = None
    if cfg.distributed_dp:
        dp_cfg = next((s["config"]["distributed_dp"] for s in released
                       if "distributed_dp" in s.get("config", {})), None)
        client_level = {
            "noise_multiplier": cfg.client_noise, "l2_clip": cfg.client_clip,
            "min_noise_shares": None if dp_cfg is None else dp_cfg["min_noise_shares"],
            "epsilon": {n: reports[n]["client_level_epsilon"] for n in names},
            "noise_shares": {n: [x["noise_shares"] for x in reports[n]["rounds"]
                                 if x["noise_shares"] is not None] for n in names},
        }
    rounds = inspect["rounds"]
    sent: dict[str, int] = {n: 0 for n in names}
    for rnd in rounds:
        for cid, size in rnd["bytes_by_client"].items():
            sent[by_id[int(cid)]] += size
    return {
        "mode": cfg.mode,
        "clients": len(names),
        "rounds_requested": cfg.rounds,
        "rounds_completed": completed,
        "trainable_parameters": dimension,
        "max_abs_error_vs_plaintext": max_err,
        "epsilon": {n: reports[n]["epsilon"] for n in names},
        "delta": reports[names[0]]["delta"],
        "accuracy": {n: {"start": reports[n]["start_accuracy"],
                         "local_only": reports[n]["rounds"][0]["local_accuracy"],
                         "combined": combined[n]} for n in names},
        "combined_accuracy": pooled,
        **({"client_level": client_level} if client_level is not None else {}),
        **({"threshold": _threshold_summary(released)} if cfg.mode == "ckks-threshold" else {}),
        "bytes_sent": sent,
        "server": {
            "messages": sum(s["messages"] for rnd in rounds for s in rnd["stages"]),
            "bytes_received": sum(s["bytes"] for rnd in rounds for s in rnd["stages"]),
            "held": _HELD[cfg.mode],
            "bodies_stored_after": sum(rnd["bodies_stored"] for rnd in rounds),
            "plaintext_updates_found_on_disk": found,
        },
    }


def _threshold_summary(released: list[dict[str, Any]]) -> dict[str, Any]:
    """A threshold round's decryption policy and, per completed round, who decrypted."""
    cfg = next((s["config"] for s in released if s.get("config")), {})
    return {
        "threshold": cfg.get("threshold"), "quorum": cfg.get("quorum"),
        "clients": cfg.get("num_clients"),
        "decryptors": [list(s["released"].extra.get("decryptors", ())) for s in released
                       if s.get("status") == "done"],
    }


def _plaintext_on_disk(server_dir: Path, updates: list[np.ndarray], windows: int = 16) -> int:
    """How many updates have any of ``windows`` 32-byte float32 runs in a server file."""
    files = [p.read_bytes() for p in server_dir.rglob("*") if p.is_file()]
    rng = np.random.default_rng(0)
    hits = 0
    for u in updates:
        raw = u.astype("<f4").tobytes()
        starts = rng.integers(0, max(1, len(raw) // 4 - 8), size=windows) * 4
        probes = [raw[s : s + 32] for s in starts]
        if any(p in f for p in probes for f in files):
            hits += 1
    return hits
