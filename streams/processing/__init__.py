"""The exactly-once processing runtime: transactions, state stores, agents.

Agents import ``streams.processing.api`` only; the rest is the runtime's machinery
(see ``runtime.py``'s docstring for the module map, docs/exactly-once.md for the protocol).
"""
