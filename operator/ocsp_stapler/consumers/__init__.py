"""Handing a verified staple to the TLS servers people already run (HAProxy, nginx, any other):
the effects the sync sidecar and the host mode share."""
