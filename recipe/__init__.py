"""cotrecipe: distil chain-of-thought into a small model with the three-stage BRIDGE curriculum.

The package by concern, top first; imports flow down only (the README's "Architecture" section draws the same map
and tests/test_layout.py checks it): ``cli`` -> ``run`` (orchestrator, child processes) -> ``train`` / ``eval`` /
``tools`` -> ``teacher`` -> ``store`` (the run directory) -> ``config`` -> ``rewards`` -> ``models`` ->
``data`` -> ``cli_common`` -> ``errors``, ``fsio``, ``dist``, ``entries`` (the registry of a run's entries).
"""

__version__ = "0.1.0"
