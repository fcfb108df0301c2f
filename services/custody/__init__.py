"""The custody service."""
