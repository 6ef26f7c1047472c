"""Access tokens for internal services: the use case, the cache, single flight, refresh ahead."""
