"""HTTPS end to end: ``--tls-cert/--tls-key`` on the server, ``--ca-cert``/``verify`` on clients.

The certificate is made with ``cryptography`` (:func:`tests.certs.self_signed`: a throwaway
CA-less self-signed certificate for 127.0.0.1): a client that trusts it completes a round; one
that does not is refused at the TLS handshake and never sends its token.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from secagg_clients.runtime import RuntimeClient
from secagg_server.operator import Operator, ServerProcess
from tests.certs import self_signed
from tests.server.conftest import make_federation


def test_round_over_tls_and_untrusted_certificate_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tokens = make_federation(tmp_path / "data", "tls", 2)
    enrolled = tokens["enrolled"]
    server = ServerProcess(tmp_path / "data", tls_cert=cert, tls_key=key).start()
    try:
        assert server.url.startswith("https://")
        # plain HTTP to the TLS port is not answered as HTTP
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=3.0)
        # a client that does not trust the certificate fails the handshake, at once and clearly
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(server.url + "/healthz", timeout=3.0)
        with RuntimeClient(server.url, tokens["client_tokens"][0], retry_for=60,
                           identity=enrolled.identity(0), roster=enrolled.roster) as untrusting, \
                pytest.raises(ConnectionError, match="TLS certificate is not trusted"):
            untrusting.whoami()

        import threading

        rng = np.random.default_rng(0)
        ups = [rng.uniform(-0.5, 0.5, 500).astype(np.float32) for _ in range(2)]
        results: dict[int, np.ndarray] = {}

        def run(i: int) -> None:
            with RuntimeClient(server.url, tokens["client_tokens"][i], verify=str(cert),
                               poll_wait=2.0, identity=enrolled.identity(i),
                               roster=enrolled.roster) as rt:
                results[i] = rt.run_round(ups[i], timeout=60).weighted_sum

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        with Operator(server.url, tokens["operator_token"], verify=str(cert)) as op:
            info = op.open_round("masking", {"vector_length": 500}, stage_timeout_s=30)
            assert op.wait(info["round_id"], timeout=60)["status"] == "done"
        for t in threads:
            t.join(60)
        assert set(results) == {0, 1}
        np.testing.assert_allclose(results[0], ups[0] + ups[1], atol=2 * 2 / 65535 + 1e-6)
    finally:
        server.stop()
