"""Model adapters: sentence embedder, vector index, micro-batching, audio decoding, transcriber."""
