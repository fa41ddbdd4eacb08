"""The base of every failure meant for the person or service that caused it."""

from __future__ import annotations


class MusicrecError(RuntimeError):
    """A refused or failed operation whose message says what to change (one line)."""
