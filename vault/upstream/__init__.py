"""The token endpoint: client, exchange, client authentication, circuit, throttle, health."""
