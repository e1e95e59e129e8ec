"""The benchmark suite: ``python -m bench [--quick] [--only NAME ...]`` (see bench/__main__.py)."""
