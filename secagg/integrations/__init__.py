"""Adapters that run secagg's protocols inside existing federated-learning stacks.

Each adapter is a transport for the same sans-IO state machines (:mod:`secagg.masking`): it
carries their bytes in the stack's own messages and adds no protocol logic of its own.
:mod:`secagg.integrations.flower` needs the ``flower`` extra (``pip install 'secagg[flower]'``);
nothing here is imported by ``import secagg``.
"""
