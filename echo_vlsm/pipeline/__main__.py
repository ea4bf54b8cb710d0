"""``python -m echo_vlsm.pipeline SPEC.json RESULT.json``: one job, in a worker process."""

import sys

from echo_vlsm.pipeline.worker import main

sys.exit(main())
