"""The record a rewriter returns per item: :class:`tapir.roles.Rewrite`
(re-exported so the plugin's modules import it from one place)."""

from __future__ import annotations

from tapir.roles import Rewrite

__all__ = ["Rewrite"]
