"""Callers: service keys and workload identities (trusted issuers, their key sets)."""

from vault.callers.bearer import authenticate
from vault.callers.workload import Workloads

__all__ = ["Workloads", "authenticate"]
