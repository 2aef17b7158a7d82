"""The OCSP domain: chain → issuer → responder → request → response → verdict → refresh time.

Pure code on ``cryptography``. It never opens a socket or reads the clock: the HTTP fetch and
``now`` are passed in, so every rule here is testable with real responses at any instant.
"""
