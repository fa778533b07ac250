"""``python -m streams`` runs the memstream command."""

from streams.cli import main

main()
