"""Adapters that put a Node behind another framework's interface.

Each one is an optional extra (``pip install 'agentsync[langgraph]'``,
``'agentsync[mcp]'``), so importing ``agentsync`` never needs them.
"""
