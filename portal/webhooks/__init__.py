"""Webhook verification shared by connector packages (reached through portal.plugins.api): URL secrets and HMAC signatures."""
