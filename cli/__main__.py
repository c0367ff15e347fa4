"""``python -m cvprep.cli`` runs the command-line application."""

from cvprep.cli import main

main()
