"""The named checks of a CKKS round, and the two errors that carry a check's name.

Every refusal names the check that failed, so a transport, a log or the adversary harness
(:mod:`secagg.ckks.adversary`) can tell *what* stopped a round without parsing prose:

* :class:`CheckFailed` (a :class:`~secagg.errors.ProtocolAbort`): a client session refuses to go
  on (the server or the dealer deviated); the session is over for this round.
* :class:`MessageRefused` (a :class:`~secagg.errors.RejectedMessage`): the server session refuses
  one client's message; nothing changes and the round goes on for everyone else.

Neither ever carries secret material.
"""

from __future__ import annotations

import enum

from secagg.errors import ProtocolAbort, RejectedMessage

__all__ = ["Check", "CheckFailed", "MessageRefused"]


class Check(enum.StrEnum):
    """What was checked. The value is the name errors and reports use."""

    #: the config's roster_digest is not the digest of the roster this party pinned
    ROSTER_DIGEST = "roster-digest"
    #: a message does not parse, or is for another config, round or stage
    MESSAGE_FORMAT = "message-format"
    #: a key advert is not signed by its sender's roster identity (e.g. a substituted key)
    ADVERT_SIGNATURE = "advert-signature"
    #: an X25519 box key is malformed or a low-order point
    BOX_KEY = "box-key"
    #: the key distribution is not signed by the dealer's roster identity
    DISTRIBUTION_SIGNATURE = "key-distribution-signature"
    #: the dealer's signed distribution seals this client's key to another X25519 key
    BOX_BINDING = "box-key-binding"
    #: the key box the dealer signed for this client does not open (a malicious dealer)
    KEY_BOX = "key-box"
    #: the dealer's signed distribution holds no key for this client: it sits the round out
    LEFT_OUT = "left-out"
    #: too few clients remain for the round's min_clients
    MIN_CLIENTS = "min-clients"
    #: an aggregate lists unknown, duplicate or unkeyed contributors, or leaves this client out
    CONTRIBUTORS = "aggregate-contributors"
    #: an upload (or its receipt in the aggregate) is not signed by its sender's roster identity
    UPLOAD_SIGNATURE = "upload-signature"
    #: an upload's sealed sketch does not open under the round's sketch-seal key
    SKETCH_SEAL = "sketch-seal"
    #: <R, aggregate> differs from the sum of the contributors' sketches
    SKETCH = "sketch-check"
    #: an upload's ciphertexts do not match the round (size, parameters, level, scale)
    CIPHERTEXT = "ciphertext"
    #: the decrypted contributor count disagrees with the announced contributors
    CONTRIBUTOR_COUNT = "contributor-count"


class CheckFailed(ProtocolAbort):
    """A client session refuses to continue: ``check`` failed at ``stage``."""

    def __init__(self, stage: str, check: Check, detail: str) -> None:
        super().__init__(stage, f"check '{check}' failed: {detail}")
        self.check = check


class MessageRefused(RejectedMessage):
    """The server session refuses one message (``check`` failed); the round goes on."""

    def __init__(self, sender: int | None, check: Check, detail: str) -> None:
        super().__init__(sender, f"{detail} (check '{check}')")
        self.check = check
