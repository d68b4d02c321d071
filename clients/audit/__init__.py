"""``secagg audit``: an auditor's report on an enterprise's privacy ledger and DP-SGD pipeline.

* :mod:`.accounting` -- the ledger's epsilon recomputed by two accountants (RDP and PRV), the
  budget left, and a flag where they disagree by more than 2 %.
* :mod:`.canaries` -- white-box gradient canaries (Dirac directions) and black-box input canaries.
* :mod:`.instrument` -- the hooks that put gradient canaries into Opacus's per-sample gradients,
  record the privatised update, and plant the bugs an audit must catch.
* :mod:`.empirical` -- one training run of the enterprise's real pipeline
  (:func:`secagg_clients.trainer.train_private`) with canaries, scored and turned into the one-run
  lower bound of :mod:`secagg.dp.audit_bound`.
* :mod:`.server_view` -- real masking and CKKS rounds in memory, attacked from everything the
  server stores, beside a plaintext round and positive controls.
* :mod:`.checklist` -- pass/fail rows with their fixes, read from the round's config objects.
* :mod:`.released` -- loss-threshold membership inference on the trained model, DP and not.
* :mod:`.report` -- report.json, report.html and the PNG figures; :mod:`.command` -- the CLI.
"""

from .accounting import AccountingSection, account_ledger
from .empirical import EmpiricalAudit, Plant, audit_pipeline

__all__ = ["AccountingSection", "EmpiricalAudit", "Plant", "account_ledger", "audit_pipeline"]
