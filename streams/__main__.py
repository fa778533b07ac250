"""``python -m streams`` runs the memstream command."""

from streams.ops.cli import main

main()
