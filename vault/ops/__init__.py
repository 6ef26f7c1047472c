"""Operators' view: status page data."""
