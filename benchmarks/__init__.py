"""Benchmarks: scripts that print a table and write ``benchmarks/results/<name>.json``; run
each as ``python -m benchmarks.<name>`` from the project root.

May import: every package but ``app`` (terminal helpers come from ``core.console``).
"""
