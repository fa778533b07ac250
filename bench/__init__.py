"""Benchmarks of memstream against the raw limits of the libraries it is built on."""
