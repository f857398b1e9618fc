"""SoupBench engine: suites, registries, training, evaluation bridge, runner, storage, CLI."""

__version__ = "0.1.0"
