"""Training-dataset export of ``memories.v1``: deterministic files with a manifest."""

from streams.ops.export.run import export_dataset

__all__ = ["export_dataset"]
