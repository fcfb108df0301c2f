"""Custody's pure rules: no I/O, no framework. Adapters (repository, services) use them."""
