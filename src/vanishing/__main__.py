"""`python -m vanishing` runs the command-line tool."""

from vanishing.cli import main

raise SystemExit(main())
