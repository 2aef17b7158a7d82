"""Staplers outside the operator: the sync sidecar (a Secret volume to nginx or HAProxy)."""
