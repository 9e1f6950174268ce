"""The bridge: channels across hosts through ZeroMQ (``shmring bridge``).

See docs/bridge.md. ``wire`` is the frames two bridges exchange,
``transport`` the socket and the thread that owns it, ``outbound`` the
exporting side of one channel, ``inbound`` the importing side, ``daemon``
the bridge process (peers, sessions, streams), ``control`` its local socket
(``Channel.open(remote=...)``), ``keys`` CURVE keys.
"""
