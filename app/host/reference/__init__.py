"""The reference central host (host-api.md) used by the demo, the tests and technicians.

Not the provider's host: a simulator that signs policies with a public TEST key.
"""
