"""`python -m bench SCENARIO ...` is `gateway bench SCENARIO ...`."""

import sys

from bench.cli import main

sys.exit(main())
