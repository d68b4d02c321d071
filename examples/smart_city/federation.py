"""The smart-city federation with the Python API: what `secagg demo` does, in one readable file.

Each enterprise has a long-term identity and the federation a roster of their public keys, which
every enterprise pins (here `enrol_locally` makes them in one directory per enterprise; in a real
federation each enterprise runs `secagg-client identity create` on its own machine and they
exchange public entries: README, "Enrolling an enterprise"). An operator starts the (untrusted)
aggregation server and creates the federation from the roster; three enterprises each train
their own copy of the model with DP-SGD on their own records and take part in rounds; the
operator opens the rounds. Each enterprise runs in its own process, as it would on its own
machine; here all of them share this computer and talk over 127.0.0.1.

    python examples/smart_city/federation.py                 # masking, 2 rounds, MiniLM
    python examples/smart_city/federation.py --mode ckks --rounds 1
    python examples/smart_city/federation.py --mode ckks-threshold --rounds 1
    python examples/smart_city/federation.py --encoder test_only_tiny   # seconds, not minutes

Swap `enterprise_path(name)` for the path of your own CSV/JSONL records (text, sensor readings,
label) to run it on your data.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
from pathlib import Path

from secagg_clients import ENTERPRISES
from secagg_clients.data import enterprise_path
from secagg_clients.enrolment import enrol_locally
from secagg_clients.federated import FederatedEnterprise, FederationPlan
from secagg_clients.model import EncoderKind
from secagg_server.operator import Operator, ServerProcess, create_federation


def enterprise(name: str, server: str, token: str, workdir: str, identity: Path, roster: Path,
               plan: FederationPlan, results: mp.Queue) -> None:
    """One enterprise's whole life: its data, ledger and model never leave this process."""
    import torch

    torch.set_num_threads(1)  # three trainers share this machine's cores
    with FederatedEnterprise.connect(
        server, token, data=enterprise_path(name), name=name, plan=plan,
        identity=identity, roster=roster,  # its own identity, the roster it pinned
        ledger=Path(workdir) / f"{name}.ledger.json", state_dir=Path(workdir) / "state",
        on_event=lambda kind, data: results.put((name, kind, data)),
    ) as ent:
        report = ent.run()
    results.put((name, "report", report.to_dict()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("masking", "ckks", "ckks-threshold"),
                        default="masking",
                        help="ckks-threshold: no single key holder; with these three "
                        "enterprises all three must sign each decryption statement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--encoder", choices=("minilm", "test_only_tiny"), default="minilm")
    args = parser.parse_args()
    plan = FederationPlan(rounds=args.rounds, budget_epsilon=8.0, epochs=5 if
                          args.encoder == "minilm" else 1, encoder=EncoderKind(args.encoder))

    work = tempfile.mkdtemp(prefix="smart-city-")
    enrolled = enrol_locally(Path(work) / "enterprises", "smart-city", ENTERPRISES)
    tokens = create_federation(Path(work) / "server", "smart-city", enrolled.roster_path)
    server = ServerProcess(Path(work) / "server").start()
    results: mp.Queue = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(
        target=enterprise, args=(name, server.url, token, work, identity, enrolled.roster_path,
                                 plan, results))
        for name, token, identity in zip(ENTERPRISES, tokens["client_tokens"],
                                         enrolled.identity_paths, strict=True)]
    for p in procs:
        p.start()
    try:
        with Operator(server.url, tokens["operator_token"]) as operator:
            dimension, reports = 0, {}
            waiting = {"ready": set(ENTERPRISES)}
            while waiting["ready"]:
                name, kind, data = results.get(timeout=900)
                if kind == "ready":
                    waiting["ready"].discard(name)
                    dimension = data["dimension"]
                    print(f"{name}: ready, start accuracy {data['accuracy']:.3f}")
            options = ({"vector_length": dimension, "clip": 2.0, "value_bits": 22}
                       if args.mode == "masking" else {"vector_length": dimension, "value_bound": 2.0})
            for r in range(args.rounds):
                trained = set()
                while trained != set(ENTERPRISES):  # open the round once every update is ready
                    name, kind, data = results.get(timeout=1800)
                    if kind == "trained":
                        trained.add(name)
                        print(f"{name}: trained round {r + 1}, local accuracy "
                              f"{data['local_accuracy']:.3f}, epsilon {data['epsilon']:.2f}")
                info = operator.open_round(args.mode, options, stage_timeout_s=120)
                status = operator.wait(info["round_id"])
                survivors = operator.result(info["round_id"])[0].survivors \
                    if status["status"] == "done" else ()
                print(f"round {r + 1}: {status['status']}, aggregate of {len(survivors)} "
                      "enterprises")
            while len(reports) < len(ENTERPRISES):
                name, kind, data = results.get(timeout=600)
                if kind == "report":
                    reports[name] = data
        for name, rep in reports.items():
            last = rep["rounds"][-1]
            print(f"{name}: accuracy {rep['start_accuracy']:.3f} -> {last['accuracy']:.3f} "
                  f"(combined model), epsilon spent {rep['epsilon']:.2f}")
    finally:
        for p in procs:
            p.join(timeout=120)
            if p.is_alive():
                p.kill()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)  # ledgers, models and the server store


if __name__ == "__main__":
    main()
