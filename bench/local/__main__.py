"""`python -m gateway.bench.local ...` is `gateway bench local ...`."""

import sys

from gateway.bench.local import main

sys.exit(main())
