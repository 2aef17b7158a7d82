"""Development-only helpers: a local control plane built from source, used by tests and `make run`.

Not part of the shipped package: the product never starts an API server.
"""
