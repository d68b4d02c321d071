"""One enterprise through federated rounds: DP-LoRA training, protected upload, shared model.

This is the loop a deployment runs per enterprise, and what ``secagg-client --data`` and the demo
start::

    from secagg_clients.federated import FederatedEnterprise, FederationPlan

    plan = FederationPlan(rounds=2, budget_epsilon=8.0)
    with FederatedEnterprise.connect("https://agg:8443", token, data="my_records.csv",
                                     name="energy_utility", ledger="energy.ledger.json",
                                     identity="energy.identity.json", roster="roster.json",
                                     plan=plan, verify="ca.pem") as ent:
        report = ent.run()

``identity`` is this enterprise's identity (file or :class:`secagg.identity.Identity`) and
``roster`` the federation's roster it pinned out of band (file or :class:`~secagg.identity.Roster`).
A round the client refuses (the server deviated from the protocol, or the round is bound to
another roster) is reported like a dropped one, with ``refused`` set and the reason.

``on_event(kind, data)`` hears how the run goes (the events ``secagg-client --events jsonl``
prints, listed in :mod:`secagg_clients.events`): ``ready``, ``trained``, the runtime's
``round_opened`` and ``stage_done``, then ``round_completed``, ``round_dropped`` or
``round_refused``, and ``done``. Rounds are always named by the server's round index.

Each round the enterprise trains from the common model with DP-SGD, waits for the server's next
round, protects the update with the round's mode (masking or CKKS: the server picks it), and
applies the released mean, so every enterprise ends with the same combined model. Training
happens before the round opens, so stage deadlines never have to cover training time. The round's
model layout is checked before any training: a round already open for another layout (or another
vector length) is refused at once, naming both layouts, without training or charging the ledger.
A round opened for another layout only after this enterprise trained is refused as soon as it is
seen, before anything is sent or charged; that training is then discarded.

The budget stops: before any training the coming round's cost is computed
(:meth:`FederationPlan.next_round`); if the rounds left would need a noise multiplier above
``max_noise_multiplier`` or cannot fit at all, :meth:`FederatedEnterprise.run` raises
:class:`secagg.dp.ledger.BudgetExceeded` with one line (spent, remaining, what the round would
cost, the knobs that would make it fit), having trained and charged nothing. The ledger is
charged when the round is open, its layout checked and before the first message is sent, keyed by
the server round id (``federation/round_id``): a training that never reached a round (no round
opened, a crash while waiting) is charged nothing, and a round is never charged twice. Once
charged, a round stays charged even if this enterprise then drops out of it (something may have
been sent). The ledger is signed with the enterprise's identity.

The noise is calibrated for the whole run: each round takes the sigma with which the ledger's
history plus the rounds left spend at most ``budget_epsilon`` (so the same sigma every round
when nothing goes wrong; splitting the budget evenly per round would spend much less than asked,
since composition is sublinear). A restart that cost an extra round of training is absorbed by
the remaining rounds' noise instead of overrunning the budget.

Restarts: with ``state_dir`` set, the combined model and the last round taken part in are saved
(atomically) after every round, so a restarted enterprise resumes with the federation's model and
the rounds it has left; round secrets are never saved, so a round interrupted by the restart is
one this enterprise dropped out of. The ledger is durable on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from secagg.dp.client_level import DistributedDPPolicy
from secagg.dp.distributed import DistributedNoise
from secagg.dp.ledger import PrivacyLedger
from secagg.errors import InvalidParameter
from secagg.identity import Identity, Roster

from .client import EnterpriseClient
from .data import Record, load_records, split_records
from .plan import FederationPlan
from .runtime import Dropped, RoundRefused, RuntimeClient

__all__ = ["EnterpriseReport", "FederatedEnterprise", "FederationPlan", "RoundReport"]

Event = Callable[[str, dict[str, Any]], None]


@dataclass(slots=True)
class RoundReport:
    index: int  # the server's round index (what the operator and every event call the round)
    mode: str
    dropped: bool
    epsilon_total: float  # this enterprise's ledger after the round's training
    local_accuracy: float  # its own model after local training, before aggregation
    accuracy: float | None = None  # the combined model after the round (None if dropped)
    survivors: list[int] = field(default_factory=list)
    update_norm: float = 0.0
    train_s: float = 0.0
    protect_s: float = 0.0  # from round open seen to aggregate received
    refused: bool = False  # this client refused the round (then dropped is set too)
    reason: str | None = None  # why it dropped out or refused
    round_id: int | None = None  # the server's id of the round (in its URLs)
    #: client-level DP (distributed Skellam noise in the released sum): the shares it held and
    #: the ledger's composed client-level epsilon after it (None: the round added none)
    noise_shares: int | None = None
    client_level_epsilon: float | None = None


@dataclass(slots=True)
class EnterpriseReport:
    name: str
    client_id: int
    dimension: int
    test_records: int
    start_accuracy: float
    rounds: list[RoundReport] = field(default_factory=list)
    epsilon: float = 0.0
    delta: float = 0.0
    client_level_epsilon: float = 0.0  # every released sum with distributed noise, composed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FederatedEnterprise:
    """An enterprise's model, data, ledger and server connection for a run of rounds."""

    def __init__(self, runtime: RuntimeClient, client: EnterpriseClient, test: list[Record], *,
                 name: str, plan: FederationPlan, audit_dir: Path | None = None,
                 state_dir: Path | None = None, on_event: Event | None = None) -> None:
        self.runtime = runtime
        self.client = client
        self.test = test
        self.name = name
        self.plan = plan
        self.audit_dir = audit_dir
        self.state_dir = state_dir
        self._emit: Event = on_event or (lambda kind, data: None)

    # ---- resumable state (the enterprise's own disk) -------------------------------------------

    def _state_paths(self) -> tuple[Path, Path]:
        assert self.state_dir is not None
        return self.state_dir / f"{self.name}.model.npy", self.state_dir / f"{self.name}.progress.json"

    def _load_state(self) -> tuple[int, int]:
        """(index of the last round taken part in or -1, rounds completed) from ``state_dir``."""
        if self.state_dir is None:
            return -1, 0
        model_path, progress_path = self._state_paths()
        if not progress_path.exists():
            return -1, 0
        try:
            progress = json.loads(progress_path.read_text())
            after, completed = int(progress["after"]), int(progress["completed"])
            digest = str(progress["spec_digest"])
            base = np.load(model_path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidParameter(f"state in {str(self.state_dir)!r} is unreadable ({exc}); move "
                                   "it aside to start this enterprise afresh") from None
        if digest != self.client.spec.digest().hex():
            raise InvalidParameter(f"state in {str(self.state_dir)!r} belongs to a different model "
                                   "(trainable parameters differ); use the same --encoder and "
                                   "LoRA rank, or a new --state-dir")
        self.client.restore_base(base)
        return after, completed

    def _save_state(self, after: int, completed: int, *, model: bool = True) -> None:
        """Record progress; ``model=False`` when the combined model has not changed since."""
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        model_path, progress_path = self._state_paths()
        if model or not model_path.exists():
            tmp_model = model_path.with_name(model_path.name + ".tmp.npy")
            np.save(tmp_model, self.client.base)
            tmp_model.replace(model_path)
        tmp = progress_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"after": after, "completed": completed,
                                   "spec_digest": self.client.spec.digest().hex()}))
        tmp.replace(progress_path)

    @classmethod
    def connect(cls, server: str, token: str, *, data: str | Path, name: str,
                ledger: str | Path, identity: Identity | str | Path,
                roster: Roster | str | Path, plan: FederationPlan | None = None,
                verify: bool | str = True, audit_dir: str | Path | None = None,
                state_dir: str | Path | None = None,
                on_event: Event | None = None,
                dp_policy: DistributedDPPolicy | None = None) -> FederatedEnterprise:
        """Connect (checking that the token, identity and roster belong together, so a server
        that is not there fails before any model is built), then load the data (train/test
        split), open the ledger and build the common model.

        ``audit_dir`` (demos and audits only) receives each round's plaintext update as .npy on
        this enterprise's own disk, so a run can be checked against the released aggregate; it is
        never sent anywhere. Leave it unset in production.

        ``dp_policy``: the client-level DP this enterprise requires of a round's distributed
        noise (:class:`secagg.dp.client_level.DistributedDPPolicy`); a weaker round is refused
        before the ledger is charged or anything sent.
        """
        plan = plan or FederationPlan()
        if not isinstance(identity, Identity):
            identity = Identity.load(identity)
        if not isinstance(roster, Roster):
            roster = Roster.load(roster)
        runtime = RuntimeClient(server, token, identity=identity, roster=roster, verify=verify,
                                on_event=on_event, dp_policy=dp_policy)
        try:
            runtime.check_enrolment()
            train, test = split_records(load_records(data), test_fraction=plan.test_fraction)
            book = PrivacyLedger.open(ledger, enterprise=name, budget_epsilon=plan.budget_epsilon,
                                      delta=plan.delta, identity=identity)
            client = EnterpriseClient.create(train, ledger=book, encoder=plan.encoder,
                                             lora_rank=plan.lora_rank, seed=plan.model_seed)
            # a round opened for another model layout is refused, naming both layouts
            runtime.layout = client.spec
        except BaseException:
            runtime.close()
            raise
        return cls(runtime, client, test, name=name, plan=plan,
                   audit_dir=None if audit_dir is None else Path(audit_dir),
                   state_dir=None if state_dir is None else Path(state_dir), on_event=on_event)

    def __enter__(self) -> FederatedEnterprise:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.runtime.close()

    def _refuse_before_training(self, after: int, accuracy: float) -> RoundReport | None:
        """The report of a round already open for another model layout, refused now, before
        any training (nothing trained, nothing charged); None when no round is open yet or the
        open one is for this model (then it is trained for and checked again before taking part)."""
        pending = self.runtime.peek_round(after)
        if pending is None:
            return None
        try:
            self.runtime.check_layout(pending)
        except RoundRefused as exc:
            return RoundReport(index=pending.index, round_id=pending.round_id, mode=pending.mode,
                               dropped=True, refused=True, reason=exc.reason,
                               epsilon_total=self.client.ledger.spent(),
                               local_accuracy=accuracy)
        return None

    def run(self, *, progress: bool = False) -> EnterpriseReport:
        """Take part in ``plan.rounds`` rounds; returns what happened (no update values)."""
        me = self.runtime.check_enrolment()
        after, completed = self._load_state()
        report = EnterpriseReport(name=self.name, client_id=int(me["client_id"]),
                                  dimension=self.client.spec.size, test_records=len(self.test),
                                  start_accuracy=self.client.evaluate(self.test),
                                  delta=self.plan.delta)
        self._emit("ready", {"name": self.name, "client_id": report.client_id,
                             "dimension": report.dimension, "accuracy": report.start_accuracy,
                             "federation": me["federation"], "resumed_rounds": completed})
        accuracy = report.start_accuracy  # the combined model's, as it stands
        for r in range(completed, self.plan.rounds):
            refused = self._refuse_before_training(after, accuracy)
            if refused is not None:
                after = refused.index
                report.rounds.append(refused)
                self._save_state(after, r + 1, model=False)
                self._emit("round_refused", {"round": refused.index, "round_id": refused.round_id,
                                             "mode": refused.mode, "reason": refused.reason,
                                             "rounds_left": self.plan.rounds - r - 1})
                continue
            t0 = time.monotonic()
            # the budget stops here, before any training (one line; nothing trained or charged)
            config = self.plan.next_round(len(self.client.records), self.client.ledger,
                                          rounds_done=r)
            update = self.client.train(config, progress=progress,
                                       max_noise_multiplier=self.plan.max_noise_multiplier)
            local = self.client.evaluate(self.test)
            train_s = time.monotonic() - t0
            # what the ledger will hold once this round is charged (when it opens)
            eps = self.client.ledger.check(update.report.gaussian_steps, delta=config.delta)
            self._emit("trained", {"epsilon": eps, "local_accuracy": local, "train_s": train_s,
                                   "loss": update.report.mean_loss,
                                   "rounds_left": self.plan.rounds - r})
            info = self.runtime.wait_for_round(after)
            after = info.index
            # a restart now must not rejoin this round's past stages
            self._save_state(after, r, model=False)
            if self.audit_dir is not None:
                self.audit_dir.mkdir(parents=True, exist_ok=True)
                np.save(self.audit_dir / f"update-{self.name}-round{info.index}.npy", update.vector)
            t1 = time.monotonic()
            about = {"round": info.index, "round_id": info.round_id, "mode": info.mode}
            entry = RoundReport(index=info.index, round_id=info.round_id, mode=info.mode,
                                dropped=False,
                                epsilon_total=self.client.ledger.spent(), local_accuracy=local,
                                train_s=train_s, update_norm=float(np.linalg.norm(update.vector)))
            try:
                # charge before the first message, once the round is known to be one this
                # client takes part in: prepare checks the mode, layout, distributed-DP settings
                # and config and makes the first message, sending nothing (refusals: Dropped)
                party = self.runtime.prepare(info, update.vector, self.plan.weight,
                                             delta=self.client.ledger.delta)
                key = f"{me['federation']}/{info.round_id}"
                charged = self.client.ledger.entry_for(key)
                if charged is not None:  # a restart found the round it had joined still open
                    raise RoundRefused(info.index, f"this enterprise already took part in server "
                                       f"round {key} (ledger entry {charged.round}) before a "
                                       "restart; a round is charged and sent once")
                entry.epsilon_total = self.client.charge(
                    update, server_round_id=key, mode=info.mode).total_epsilon
                layout = str(info.config.get("layout_digest", ""))

                def released(noise: DistributedNoise, shares: int, key: str = key,
                             layout: str = layout) -> None:
                    """Client-level DP: recorded before the unmask reply leaves."""
                    self.client.ledger.record_client_level(
                        noise, noise_shares=shares, server_round_id=key, layout_digest=layout)

                result = self.runtime.take_part(info, update.vector, self.plan.weight,
                                                on_release=released, party=party)
            except Dropped as exc:
                self.client.restore_base(self.client.base)  # discard the local training
                entry.dropped = True
                entry.refused = isinstance(exc, RoundRefused)
                entry.reason = exc.reason if isinstance(exc, RoundRefused) else str(exc)
                report.rounds.append(entry)
                self._save_state(after, r + 1, model=False)
                self._emit("round_refused" if entry.refused else "round_dropped",
                           {**about, "reason": entry.reason,
                            "rounds_left": self.plan.rounds - r - 1})
                continue
            if self.audit_dir is not None:
                np.save(self.audit_dir / f"released-{self.name}-round{info.index}.npy",
                        result.weighted_sum)
            if result.noise is not None:  # client-level DP: the shares actually in the sum
                # recorded before the unmask reply (the same entry: idempotent per round)
                recorded = self.client.ledger.record_client_level(
                    result.noise, noise_shares=result.noise_shares, server_round_id=key,
                    layout_digest=layout)
                entry.noise_shares = result.noise_shares
                entry.client_level_epsilon = recorded.total_epsilon
            self.client.apply_aggregate(result.mean)
            entry.accuracy = accuracy = self.client.evaluate(self.test)
            entry.survivors = list(result.survivors)
            entry.protect_s = time.monotonic() - t1
            report.rounds.append(entry)
            self._save_state(after, r + 1)
            self._emit("round_completed", {**about, "accuracy": entry.accuracy,
                                           "survivors": entry.survivors,
                                           "total_weight": result.total_weight,
                                           "protect_s": entry.protect_s,
                                           "received_at": result.received_at,
                                           "noise_shares": entry.noise_shares,
                                           "client_level_epsilon": entry.client_level_epsilon})
        report.epsilon = self.client.ledger.spent()
        report.client_level_epsilon = self.client.ledger.client_level_spent()
        self._emit("done", {"epsilon": report.epsilon,
                            "completed": sum(1 for x in report.rounds if not x.dropped),
                            "dropped": sum(1 for x in report.rounds if x.dropped and not x.refused),
                            "refused": sum(1 for x in report.rounds if x.refused)})
        return report

