"""Drive one SecAgg+ round by hand with the sans-IO state machines.

This is what a transport (an HTTP server, Flower, a message queue) does: carry bytes between
each client's ClientSession and the ServerSession, and decide when a stage is over. Here the
"network" is a dict, and client 3 vanishes after uploading its masked update.

    python examples/masking/manual_round.py
"""

from __future__ import annotations

import numpy as np

from secagg.masking import ClientSession, MaskingConfig, ServerSession, encode_update
from secagg.masking.wire import encode

NUM_CLIENTS, LENGTH = 8, 10_000


def main() -> None:
    rng = np.random.default_rng(0)
    updates = [rng.normal(0, 0.05, LENGTH).astype(np.float32) for _ in range(NUM_CLIENTS)]
    weights = [100, 250, 80, 40, 300, 120, 60, 90]  # e.g. examples each client trained on

    config = MaskingConfig.create(num_clients=NUM_CLIENTS, vector_length=LENGTH,
                                  max_weight=1000, dropout_rate=0.1, full_graph=True)
    print(f"graph degree {config.neighbours}, threshold {config.threshold}, "
          f"{config.mod_bits}-bit modulus")
    clients = {i: ClientSession(config, i, encode_update(config, updates[i], weight=weights[i]))
               for i in range(NUM_CLIENTS)}
    server = ServerSession(config)

    outbox = {i: encode(c.start()) for i, c in clients.items()}
    vanished = 3
    while True:
        for data in outbox.values():
            server.receive(data)            # a bad message would raise RejectedMessage here
        inbox = server.advance_bytes()      # close the stage: silent clients become dropouts
        if not inbox:
            break
        outbox = {}
        for i, data in inbox.items():
            if i == vanished and server.stage.value == "unmask":
                continue                    # client 3 disappears after uploading its update
            outbox[i] = clients[i].handle_bytes(data)
        print(f"stage {server.stage.value:<13} {len(outbox)} clients answered")

    result = server.result
    survivors = list(result.survivors)
    expected = sum(weights[i] * updates[i] for i in survivors) / sum(weights[i] for i in survivors)
    print(f"survivors {survivors}, dropped {list(result.dropped)}")
    print(f"max |secure mean - plaintext mean| = {np.max(np.abs(result.mean() - expected)):.2e}")


if __name__ == "__main__":
    main()
