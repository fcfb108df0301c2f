"""The project's common library: configuration, value types, ids, messaging, database helpers.

It holds no business rule of any one service.
"""
