"""What applications import: the producer SDK, the typed events and the read-service client."""
