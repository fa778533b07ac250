"""The foundation every part shares.

Settings, logging, validation, topics, schemas and codec, metrics. Nothing here imports
the SDK, the runtime, the read service, the operator tools or the agents.
"""
