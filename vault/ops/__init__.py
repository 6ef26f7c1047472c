"""What operators watch: the series every worker starts with."""

from vault.ops.series import start_series

__all__ = ["start_series"]
