"""ClientApp: an enterprise fine-tunes the shared model with DP-SGD on its own records and hands
the result to secagg's mod, which uploads it only inside a secure round: masked (run config
``protection = "masking"``, the default) or encrypted under threshold CKKS
(``protection = "ckks-threshold"``)."""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from secagg.integrations.flower import SecAggPlusMod, ThresholdCKKSMod

from .plaintext_check import write_client
from .task import client_check_dir, credentials, enterprise, from_arrays, to_arrays

_MODS = {"masking": SecAggPlusMod(credentials=credentials),
         "ckks-threshold": ThresholdCKKSMod(credentials=credentials)}


def protection(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The mod of the protocol the run config's ``protection`` names."""
    name = str(context.run_config.get("protection", "masking"))
    if name not in _MODS:
        raise ValueError(f"run config protection={name!r}: expected one of {sorted(_MODS)}")
    return _MODS[name](msg, context, call_next)


app = ClientApp(mods=[protection])


@app.train()
def train(msg: Message, context: Context) -> Message:
    from secagg_clients.trainer import DPConfig

    cfg = context.run_config
    partition = int(context.node_config.get("partition-id", 0))
    client, _ = enterprise(partition, str(cfg["encoder"]), int(cfg["lora-rank"]),
                           str(cfg["state-dir"]), float(cfg["budget-epsilon"]))
    server_round = int(msg.content["config"]["server-round"])
    client.restore_base(from_arrays(msg.content["arrays"], client.spec))
    # charged once per (Flower run, server round): a repeated train message is refused, not
    # trained and charged again
    update = client.train_round(DPConfig(target_epsilon=float(cfg["round-epsilon"]),
                                         epochs=int(cfg["epochs"])), progress=False,
                                server_round_id=f"flower-{context.run_id}-{server_round}")
    local = client.base + update.vector  # this enterprise's model after the round
    check_dir = client_check_dir(context)
    if check_dir:  # test federations only (see plaintext_check.py)
        write_client(check_dir, server_round, credentials(context).client_id,
                     local.astype(np.float32), update.num_examples)
    return Message(RecordDict({
        "arrays": to_arrays(np.asarray(local, dtype=np.float32), client.spec),
        "metrics": MetricRecord({"num-examples": update.num_examples, "loss": update.mean_loss,
                                 "epsilon": update.ledger_entry.total_epsilon}),
    }), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg = context.run_config
    partition = int(context.node_config.get("partition-id", 0))
    client, test = enterprise(partition, str(cfg["encoder"]), int(cfg["lora-rank"]),
                              str(cfg["state-dir"]), float(cfg["budget-epsilon"]))
    client.restore_base(from_arrays(msg.content["arrays"], client.spec))
    return Message(RecordDict({"metrics": MetricRecord({
        "num-examples": len(test), "accuracy": client.evaluate(test)})}), reply_to=msg)
