"""The smart-city demo (``secagg demo``, which ``bash scripts/demo.sh`` runs: ``command.py`` and
``demo.py``) and the same federation written with the public Python API (``federation.py``)."""
