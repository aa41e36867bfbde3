"""Concrete security mechanisms (pure state machines): NULL, PLAIN, CURVE."""
