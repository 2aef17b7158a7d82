"""Network adapters for the OCSP domain: the guarded HTTP fetcher and its destination policy."""
