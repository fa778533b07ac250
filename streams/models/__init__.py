"""Model adapters: sentence embedder, vector index, audio decoding, transcriber."""
