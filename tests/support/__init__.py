"""Helpers shared by the integration tests: real services, databases and worker processes."""
