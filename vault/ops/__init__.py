"""The operators' view: status page data, attention, readiness, gauges, notifications."""
