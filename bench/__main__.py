"""`python -m gateway.bench SCENARIO ...` is `gateway bench SCENARIO ...`."""

import sys

from gateway.bench.cli import main

sys.exit(main())
