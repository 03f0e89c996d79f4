"""The builtin plugins of compression-orchestrator, one module per plugin.

Each module is listed in the ``orchestrator`` entry-point group like any third-party plugin and imports
only the public API of :mod:`orchestrator`.
"""
