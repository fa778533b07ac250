"""Model adapters: sentence embedder, per-tenant vector index, micro-batching off the event loop."""
