"""``python -m argbridge`` → :func:`argbridge.cli.main`."""

from argbridge.cli import main

raise SystemExit(main())
