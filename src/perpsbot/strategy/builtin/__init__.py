"""The built-in strategies: each a short file written against ``perpsbot.strategy.api``,
to copy and change (``perpsbot strategy list`` shows where they are)."""
