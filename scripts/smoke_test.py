#!/usr/bin/env python3
"""Smoke-test a TF Serving endpoint over REST and gRPC; see serving/smoke.py.

python scripts/smoke_test.py --rest-url http://HOST:8501 --grpc-target HOST:8500 --model-name imdb
"""

import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving.smoke import main

if __name__ == "__main__":
    sys.exit(main())
