"""Where a Flower client finds its enterprise identity and the federation's pinned roster.

By default both come from the SuperNode's own ``node_config`` (set by the enterprise that runs
it, never by the server)::

    flower-supernode ... --node-config "secagg-identity='/etc/secagg/me.identity.json' \\
                                        secagg-roster='/etc/secagg/roster.json'"

The identity file is read with :meth:`secagg.identity.Identity.load` (refused if others can read
it) and the roster with :meth:`secagg.identity.Roster.load`. An application with another source
(a simulation that keeps one identity per partition, a secrets manager) passes its own
``credentials`` callable to :class:`~secagg.integrations.flower.SecAggPlusMod`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from flwr.app import Context

from secagg.errors import InvalidParameter
from secagg.identity import Identity, Roster

__all__ = ["IDENTITY_KEY", "ROSTER_KEY", "Credentials", "CredentialsSource",
           "credentials_from_node_config"]

IDENTITY_KEY: Final = "secagg-identity"
ROSTER_KEY: Final = "secagg-roster"


@dataclass(frozen=True, slots=True)
class Credentials:
    """This enterprise's identity (private) and the roster it pinned; ``client_id`` is the id
    the roster gives the identity."""

    identity: Identity
    roster: Roster

    @property
    def client_id(self) -> int:
        return self.roster.id_of(self.identity.public_key)

    def __repr__(self) -> str:
        return f"<Credentials {self.identity!r} federation={self.roster.federation}>"


CredentialsSource = Callable[[Context], Credentials]


def credentials_from_node_config(context: Context) -> Credentials:
    """Load the identity and roster whose paths the SuperNode's ``node_config`` names."""
    paths = {}
    for key in (IDENTITY_KEY, ROSTER_KEY):
        value = context.node_config.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidParameter(
                f"node_config has no '{key}' path: start the SuperNode with --node-config "
                f"\"{IDENTITY_KEY}='PATH' {ROSTER_KEY}='PATH'\" (secagg-client identity create "
                "makes the identity; the roster is the file the federation pinned)")
        paths[key] = value
    return Credentials(Identity.load(paths[IDENTITY_KEY]), Roster.load(paths[ROSTER_KEY]))
