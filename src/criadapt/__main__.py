"""``python -m criadapt`` runs the command line."""

import sys

from criadapt.cli import main

sys.exit(main())
