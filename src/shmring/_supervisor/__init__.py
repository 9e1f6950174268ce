"""The supervisor: lifecycle of regions, liveness of processes; its client and wire format.

Server side, top down: ``command`` (``shmring supervisor``) -> ``server``
(``Supervisor``: connections, requests) -> ``revoke`` (claim watch) ->
``regions`` (region table, the unlink rule) -> ``deaths`` (process index)
-> ``procfs``; ``loop`` is the event loop. None imports a module above it.
Client side: ``client`` over ``wire``.
"""
