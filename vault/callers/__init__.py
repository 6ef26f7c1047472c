"""Who may call the internal API: service and operator keys."""
