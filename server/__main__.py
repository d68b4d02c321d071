"""``python -m server`` is ``secagg-server``."""

from server.cli import main

raise SystemExit(main())
