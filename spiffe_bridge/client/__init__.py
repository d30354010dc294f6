"""Workload API clients: ``WorkloadClient`` (threads) and ``AsyncWorkloadClient`` (asyncio)."""
