"""Operator tools.

The CLI, topic and ACL provisioning, replay, stats, the dev stack, export and the demo.
The CLI and the demo are entry points: they may import the agents (``agents.worker``).
"""
