"""`python -m listener` is the `listener` command."""

from listener.cli import main

raise SystemExit(main())
