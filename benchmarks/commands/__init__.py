"""``secagg bench``: the command group the ``secagg`` CLI loads through its ``secagg.commands``
entry point (pyproject.toml). One module per benchmark: ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args)``; their flags and JSON keys are a published contract.
"""

HELP = "measure secagg against the anchor implementation in the same process"
SUBCOMMANDS = {  # relative to this package
    "masking": ".masking",
    "masking-scale": ".masking_scale",
    "ckks": ".ckks",
    "dp": ".dp",
    "e2e": ".e2e",
    "flower": ".flower",
}
