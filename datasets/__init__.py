"""Datasets behind one small interface (docs/BENCHMARK.md §1, §9, §10)."""
