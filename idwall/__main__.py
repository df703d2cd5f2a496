"""``python -m idwall``: the same as the ``idwall`` console script."""

from idwall.cli import main

raise SystemExit(main())
