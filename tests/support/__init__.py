"""Test stand-ins for external services (the Slack Web API)."""
