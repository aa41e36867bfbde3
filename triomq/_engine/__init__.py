"""The Trio session layer: pipes, per-connection engines, dialers and acceptors.

It joins the pure layers (codec, mechanisms, patterns) to the transports. It
never imports ``triomq._socket``: the socket is handed in as a ``SocketCore``.
"""
