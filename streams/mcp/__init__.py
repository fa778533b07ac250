"""``memstream mcp``: memstream's memory as a Model Context Protocol server for assistants.

Only ``server`` and ``auth`` import the ``mcp`` SDK (the ``mcp`` extra); ``memory`` is plain
memstream code, so the core CLI works without the extra.
"""
