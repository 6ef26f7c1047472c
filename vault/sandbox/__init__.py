"""A local stand-in for Seismic, for development only: a token endpoint shaped like Seismic's,
an app registered against it, and signed callbacks sent to a running service."""
