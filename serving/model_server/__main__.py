"""Starts the local server.

python -m serving.model_server --rest_api_port=8501 --model_name=imdb --model_base_path=...
"""

import sys

from serving.model_server.server import main

sys.exit(main())
