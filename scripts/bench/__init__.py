"""Benchmark harness: measurement helpers, the test audio stack, and the workloads compared.

``scripts/bench.py`` is the entry point; the modules here are imported as
``scripts.bench.<name>`` with the repository root on ``sys.path``.
"""
