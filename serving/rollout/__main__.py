"""``python -m serving.rollout ...``, the same as ``python -m serving rollout ...``."""

import sys

from serving.rollout.cli import main

sys.exit(main())
