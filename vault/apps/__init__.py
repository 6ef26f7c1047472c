"""Registered apps and their delegations."""
