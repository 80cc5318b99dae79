"""`python -m listener` is the `listener` command."""

from listener.app.cli import main

raise SystemExit(main())
