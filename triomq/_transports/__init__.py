"""Trio I/O for each transport: they produce ``trio.abc.Stream`` objects and listeners.

Transports know nothing of ZMTP, patterns or sockets.
"""
