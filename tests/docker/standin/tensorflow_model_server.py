#!/usr/bin/python3
"""/usr/bin/tensorflow_model_server in the stand-in image: the project's local server, behind
the binary's command line and process behaviour as a container sees them (README.md here).

- Flags are parsed by the binary's rules (serving/model_server/tf_serving_flags.py): an unknown
  argument prints ``unknown argument: X`` and the usage, and the server starts anyway; a value
  that does not parse prints the usage and exits 255.
- Flags of the binary that the local server does not implement are logged and ignored.
- No signal handler: SIGTERM kills the process at once, in-flight requests included, as it kills
  the binary (tensorflow/serving#1853). As PID 1 it is therefore ignored, as the binary's is.
- The ports open only once every model is AVAILABLE; a start-up failure prints
  ``Failed to start server. Error: ...`` and exits 255.
"""

import signal
import sys
import threading

sys.path.insert(0, "/opt/local-tfserving")

from serving.model_server import tf_serving_flags
from serving.model_server.server import (
    EXIT_START_FAILED,
    configure_logging,
    parse_options,
    start_server,
)

VERSION_LINES = (
    "TensorFlow ModelServer: stand-in (the project's local server)",
    "TensorFlow Library: {tensorflow}",
)


def usage() -> str:
    flags = "\n".join(f"\t--{name}={kind}" for name, kind in tf_serving_flags.FLAG_TYPES.items())
    return f"usage: {sys.argv[0]}\nFlags:\n{flags}\n"


def main(argv: list[str]) -> int:
    parsed = tf_serving_flags.parse(argv)
    if parsed.bad_values:
        for problem in parsed.bad_values:
            print(f"Couldn't interpret value {problem}", file=sys.stderr)
        print(usage(), end="", flush=True)
        return EXIT_START_FAILED
    if parsed.values.get("version") in ("true", "1"):
        import tensorflow as tf

        print("\n".join(VERSION_LINES).format(tensorflow=tf.__version__))
        return 0
    if parsed.unknown:
        print(f"unknown argument: {parsed.unknown[0]}\n{usage()}", end="", flush=True)
    # The binary has no SIGINT handler either; Python's KeyboardInterrupt would be one.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    configure_logging()
    options = parse_options([f"--{name}={value}" for name, value in parsed.values.items()])
    if isinstance(options, int):
        return EXIT_START_FAILED
    server = start_server(options)
    if server is None:
        return EXIT_START_FAILED
    threading.Event().wait()  # until a signal ends the process
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
