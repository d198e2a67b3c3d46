"""The web dashboard: the bot's positions, orders, PnL, marks, alerts, health and risk
mode on a page served by the bot on 127.0.0.1 behind a token."""

from perpsbot.dashboard.token import ensure_dashboard_token, token_path
from perpsbot.dashboard.web import add_dashboard

__all__ = ["add_dashboard", "ensure_dashboard_token", "token_path"]
