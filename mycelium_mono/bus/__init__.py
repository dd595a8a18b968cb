"""Flexible mode: the asyncio MessageBus, ServiceRuntime, hybrid backlog, latency tracking."""
