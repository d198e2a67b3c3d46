"""Backtesting on the live code path: candles in, the bot's own services, a report out."""
