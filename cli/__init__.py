"""The ``cvprep`` command-line application.

`app` defines the Click group; each command module adds its commands to it when imported.
"""

from cvprep.cli import dataset_commands, serve_commands, train_commands  # noqa: F401  (register)
from cvprep.cli.app import cli

main = cli

__all__ = ["cli", "main"]
