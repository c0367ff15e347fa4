"""``python -m cvprep`` runs the command-line application."""

from cvprep.cli import main

main()
