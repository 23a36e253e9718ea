"""Benchmark scripts, one per comparison; run each as a module: ``python -m benchmarks.<name>``."""
