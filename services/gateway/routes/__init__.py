"""The public API's routers, one module per part of docs/spec/api.md."""
