"""chathack benchmarks: ``python -m benchmarks.run`` (see benchmarks/README.md).

Nothing here is imported by the product or timed inside the test suite.
"""
