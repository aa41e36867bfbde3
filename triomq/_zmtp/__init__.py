"""ZMTP 3.x with no I/O: greeting, frames, commands, mechanisms' interface, connection.

This package imports the standard library, attrs and triomq's own pure modules
only. It must never import trio (tests/test_layering.py checks).
"""
