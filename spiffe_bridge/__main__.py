"""``python -m spiffe_bridge`` runs the CLI."""

import sys

from spiffe_bridge.cli.main import main

sys.exit(main())
