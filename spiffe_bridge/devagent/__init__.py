"""Embedded SPIFFE Workload API server (dev agent) for demos and tests."""
