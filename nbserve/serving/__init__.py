"""Serving in this process: the engine, model versions, request queues, the batching policy, and
the workers that run handlers (threads, or processes of their own: process/)."""
