"""`mlserver.version`: the MLServer release whose Python API this package follows (documented 1.5, checked
against 1.7.1); code that compares `mlserver.__version__` takes the branch for that release."""

__version__ = "1.5.0"
