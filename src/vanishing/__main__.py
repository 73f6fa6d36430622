"""`python -m vanishing` runs the command-line tool."""

from vanishing.frontends.cli import main

raise SystemExit(main())
