"""A TF-Serving-compatible model server for machines without a Docker engine.

It is a development and test server: it loads SavedModels the way ``tensorflow_model_server``
does (SignatureDef in a TF1 session) and answers the same REST and gRPC API, so that clients,
the smoke test and the tests run unchanged against either. Production runs the
``tensorflow/serving`` image (``docker/Dockerfile``).

Start-up follows TF Serving: the ports open only once every configured model has a version
AVAILABLE; if the first version of a model fails to load for good, the process exits non-zero.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import text_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2
from waitress.server import create_server

from serving.cli_args import EXIT_OK, bool_flag, parse_args, usable_cpus
from serving.contract import GRPC_PORT, MAX_MESSAGE_BYTES, METRICS_PATH
from serving.model_config import (
    ModelConfigError,
    parse_model_server_config,
    read_model_config_text,
)
from serving.model_server.batching import BatchingOptions, BatchScheduler
from serving.model_server.config_protos import MonitoringConfig
from serving.model_server.errors import ServingError
from serving.model_server.grpc_service import ModelServicer, PredictionServicer
from serving.model_server.manager import LoadSettings, ModelManager
from serving.model_server.metrics import ServingMetrics
from serving.model_server.overload import summarize_waitress_queue_warnings
from serving.model_server.rest import RestApi
from serving.model_server.tf_serving_flags import FLAG_TYPES

logger = logging.getLogger(__name__)

# TF Serving accepts gRPC messages up to 2 GB; this development server limits requests (gRPC
# and REST) to protect the machine it runs on. Override with --max_request_bytes.
DEFAULT_MAX_REQUEST_BYTES = MAX_MESSAGE_BYTES
# Seconds that in-flight requests get to finish after SIGTERM/SIGINT.
SHUTDOWN_GRACE_SECONDS = 10.0
# TF Serving's Prometheus path when the monitoring config names none.
DEFAULT_METRICS_PATH = METRICS_PATH
# Exit code of tensorflow_model_server when start-up fails (it returns -1).
EXIT_START_FAILED = 255


class StartupError(Exception):
    """The server could not start (bad config, or no version of a model became available)."""


@dataclass(frozen=True)
class ServerOptions:
    """The subset of tensorflow_model_server's flags that the local server implements."""

    port: int = GRPC_PORT
    rest_api_port: int = 0
    model_name: str = ""
    model_base_path: str = ""
    model_config_file: str = ""
    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    rest_api_num_threads: int = 0
    # gRPC worker threads (0: 4 x CPUs, as TF Serving's default).
    grpc_max_threads: int = 0
    rest_api_timeout_in_ms: int = 30_000
    enable_grpc_healthcheck_service: bool = False
    # Server-side batching (serving/model_server/batching.py), with TF Serving's defaults
    # when no parameters file is given.
    enable_batching: bool = False
    batching_parameters_file: str = ""
    # The Prometheus endpoint on the REST port (text MonitoringConfig), as TF Serving's.
    monitoring_config_file: str = ""
    # Re-read --model_config_file this often while serving (0: never), and whether a new label
    # may point at a version that is not AVAILABLE yet.
    model_config_file_poll_wait_seconds: float = 0.0
    allow_version_labels_for_unavailable_models: bool = False
    # "key=value,key=value" gRPC server arguments, e.g. grpc.max_connection_age_ms=60000.
    grpc_channel_arguments: str = ""
    # Local-server-only: the address both ports bind to (TF Serving binds all interfaces).
    bind_address: str = "0.0.0.0"
    # Local-server-only: largest accepted request body / gRPC message.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES


def config_file_text(options: ServerOptions) -> str | None:
    """The text of --model_config_file, read once (None without the flag).

    Raises:
        StartupError: the file cannot be read.
    """
    if not options.model_config_file:
        return None
    try:
        return read_model_config_text(options.model_config_file)
    except ModelConfigError as error:
        raise StartupError(f"--model_config_file: {error}") from error


def model_server_config(
    options: ServerOptions, text: str | None = None
) -> model_server_config_pb2.ModelServerConfig:
    """The ModelServerConfig from --model_config_file, or the single-model flags.

    Args:
        options: the server's flags.
        text: the config file's text as already read (``config_file_text``), so that what is
            parsed is what the caller compared or recorded; None reads the file.
    """
    if options.model_config_file:
        path = Path(options.model_config_file)
        if text is None:
            text = config_file_text(options)
        try:
            config = parse_model_server_config(text, path)
        except ModelConfigError as error:
            raise StartupError(f"--model_config_file: {error}") from error
        if config.WhichOneof("config") != "model_config_list":
            raise StartupError(f"{path}: only model_config_list is supported")
    else:
        if not options.model_base_path:
            raise StartupError(
                "Both server_options.model_base_path and server_options.model_config_file are "
                "empty!"
            )
        config = model_server_config_pb2.ModelServerConfig()
        model = config.model_config_list.config.add()
        model.name = options.model_name or "default"
        model.base_path = str(Path(options.model_base_path).absolute())
        model.model_platform = "tensorflow"
    names = set()
    for model in config.model_config_list.config:
        if model.name in names:
            raise StartupError(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
        if not Path(model.base_path).is_absolute() and "://" not in model.base_path:
            raise StartupError(
                f"Expected model {model.name} to have an absolute path or URI; got "
                f"base_path()={model.base_path}"
            )
        if not model.model_platform:
            raise StartupError(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_platform != "tensorflow":
            raise StartupError(f"Model {model.name}: only model_platform 'tensorflow' is served")
    return config


def metrics_path(options: ServerOptions) -> str | None:
    """The Prometheus endpoint's path from --monitoring_config_file, or None when it is off."""
    if not options.monitoring_config_file:
        return None
    path = Path(options.monitoring_config_file)
    config = MonitoringConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except (OSError, text_format.ParseError) as error:
        raise StartupError(f"Invalid --monitoring_config_file {path}: {error}") from error
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    if not options.rest_api_port:
        raise StartupError("--monitoring_config_file needs --rest_api_port (metrics use REST)")
    return prometheus.path or DEFAULT_METRICS_PATH


class ModelServer:
    """Loads the configured models, then serves gRPC and REST until ``stop``."""

    def __init__(self, options: ServerOptions):
        if options.port == 0 and options.rest_api_port == 0:
            raise StartupError("At least one of --port and --rest_api_port must be non-zero")
        self.options = options
        # Every option is parsed and checked now, so that a bad value fails before the (slow)
        # model load; nothing runs (no thread, no port) until start().
        self._channel_arguments = parse_channel_arguments(options.grpc_channel_arguments)
        self.metrics_path = metrics_path(options)
        self._batching = self._batching_options(options)
        # Created by start() once the models are loaded, since its threads start with it.
        self.scheduler: BatchScheduler | None = None
        self.metrics = ServingMetrics(self._queued_tasks if self._batching else None)
        # The config file's text as the models were configured from it, recorded before the
        # (slow) load: the config watcher compares the file with it, so an edit made while the
        # models load is applied at the watcher's first poll.
        self._config_text = config_file_text(options)
        self.manager = ModelManager(
            model_server_config(options, self._config_text),
            LoadSettings(
                file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
                max_num_load_retries=options.max_num_load_retries,
                load_retry_interval_seconds=options.load_retry_interval_micros / 1e6,
                enable_model_warmup=options.enable_model_warmup,
                num_request_iterations_for_warmup=options.num_request_iterations_for_warmup,
                allow_version_labels_for_unavailable_models=(
                    options.allow_version_labels_for_unavailable_models
                ),
            ),
            self.metrics,
        )
        self._config_watcher: threading.Thread | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc_server: grpc.Server | None = None
        self._grpc_executor: futures.ThreadPoolExecutor | None = None
        self._rest_server = None
        self._rest_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @staticmethod
    def _batching_options(options: ServerOptions) -> BatchingOptions | None:
        """The batching parameters, or None without --enable_batching."""
        if not options.enable_batching:
            if options.batching_parameters_file:
                logger.warning("--batching_parameters_file is ignored without --enable_batching")
            return None
        try:
            batching = (
                BatchingOptions.from_file(options.batching_parameters_file)
                if options.batching_parameters_file
                else BatchingOptions()
            )
        except (OSError, ValueError) as error:
            raise StartupError(f"Invalid batching parameters: {error}") from error
        logger.info("Batching enabled: %s", batching)
        return batching

    def _queued_tasks(self) -> int:
        return self.scheduler.queued_tasks() if self.scheduler is not None else 0

    def start(self, load_timeout: float | None = None) -> None:
        """Loads every model (blocking), then starts batching and opens the gRPC and REST ports.

        A start that fails stops whatever it had started (threads, loaded models, the gRPC
        port) before it raises, so nothing is left running.

        Args:
            load_timeout: give up waiting for the initial load after this many seconds
                (None waits as long as TF Serving does: forever while no version exists).

        Raises:
            StartupError: a model's initial version ended in error, no version became
                available within ``load_timeout``, or a port cannot be bound.
        """
        try:
            self._start(load_timeout)
        except BaseException:
            self.stop(grace_seconds=0)
            raise

    def _start(self, load_timeout: float | None) -> None:
        self.manager.start()
        try:
            failures = self.manager.wait_until_ready(load_timeout)
        except TimeoutError as error:
            raise StartupError(
                f"The models did not become available within {load_timeout:g} s"
            ) from error
        if failures:
            raise StartupError(
                f"UNKNOWN: {len(failures)} servable(s) did not become available: "
                + ", ".join(f"{{{failure}}}" for failure in failures)
            )
        options = self.options
        if self._batching is not None:
            self.scheduler = BatchScheduler(self._batching)
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._config_watcher = threading.Thread(
                target=self._watch_config, name="config-poll", daemon=True
            )
            self._config_watcher.start()
        if options.port:
            self._start_grpc(options)
        if options.rest_api_port:
            self._start_rest(options)

    def _watch_config(self) -> None:
        """Re-reads --model_config_file every poll interval and applies it when it changed; a
        config that cannot be applied is logged once and the running one stays.

        The file is read once per poll, and the text compared is the text parsed and
        recorded. The first comparison is with the text the models were loaded from (read
        before the load), so an edit made during the load is applied at the first poll.
        """
        last_text = self._config_text
        while not self._stopped.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                text = read_model_config_text(self.options.model_config_file)
            except ModelConfigError as error:
                logger.error("--model_config_file: %s", error)
                continue
            if text == last_text:
                continue
            last_text = text
            try:
                self.manager.reload_config(model_server_config(self.options, text))
            except (StartupError, ServingError) as error:
                logger.error("The new model config is not applied: %s", error)

    def _start_grpc(self, options: ServerOptions) -> None:
        executor = futures.ThreadPoolExecutor(
            max_workers=options.grpc_max_threads or 4 * usable_cpus(), thread_name_prefix="grpc"
        )
        server = grpc.server(
            executor,
            options=[
                ("grpc.max_receive_message_length", options.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                *self._channel_arguments,
            ],
        )
        # Kept before the bind, so that stop() cleans up after a failed one.
        self._grpc_server, self._grpc_executor = server, executor
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.manager, self.scheduler), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.manager), server
        )
        if options.enable_grpc_healthcheck_service:
            health_servicer = health.HealthServicer()
            for service in (
                "",
                "tensorflow.serving.ModelService",
                "tensorflow.serving.PredictionService",
            ):
                health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = f"{options.bind_address}:{options.port}"
        try:
            self.grpc_port = server.add_insecure_port(address)
        except RuntimeError as error:  # grpcio's "Failed to bind to address ..."
            raise StartupError(f"Cannot bind gRPC to {address}: {error}") from error
        server.start()
        logger.info("Running gRPC ModelServer at %s:%d ...", options.bind_address, self.grpc_port)

    def _start_rest(self, options: ServerOptions) -> None:
        app = RestApi(
            self.manager,
            options.rest_api_timeout_in_ms / 1000,
            scheduler=self.scheduler,
            metrics_path=self.metrics_path,
        )
        threads = options.rest_api_num_threads or 4 * usable_cpus()
        summarize_waitress_queue_warnings(threads)
        try:
            listener = _listening_socket(options.bind_address, options.rest_api_port)
        except OSError as error:
            raise StartupError(
                f"Failed to start HTTP Server at {options.bind_address}:"
                f"{options.rest_api_port}: {error}"
            ) from error
        try:
            self._rest_server = create_server(
                app,
                sockets=[listener],
                threads=threads,
                max_request_body_size=options.max_request_bytes,
                ident="local-tfserving",
                # waitress allows 100 open connections by default; load tests open more.
                connection_limit=1000,
                clear_untrusted_proxy_headers=True,
            )
        except BaseException:
            listener.close()
            raise
        self.rest_port = int(self._rest_server.effective_port)
        self._rest_thread = threading.Thread(target=self._rest_server.run, name="rest", daemon=True)
        self._rest_thread.start()
        logger.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_port)

    def stop(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stops taking requests, lets in-flight ones finish, unloads the models, and ends every
        thread the server started; after a failed ``start`` too, whatever it had reached."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._rest_server is not None:
            # Closed from inside waitress' own loop thread: closing its sockets from here
            # while the loop sits in select() made that thread die with EBADF. If the loop has
            # already closed its trigger, close directly.
            try:
                self._rest_server.trigger.pull_trigger(self._rest_server.close)
            except OSError:
                self._rest_server.close()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace_seconds).wait()
        if self._grpc_executor is not None:
            # grpc.Server.stop leaves the handler threads to their executor.
            self._grpc_executor.shutdown(wait=False, cancel_futures=True)
        if self._rest_thread is not None:
            self._rest_thread.join(timeout=grace_seconds)
        if self._rest_server is not None:
            # waitress' close() leaves its worker threads running.
            self._rest_server.task_dispatcher.shutdown(timeout=grace_seconds)
        if self._config_watcher is not None:
            self._config_watcher.join(timeout=grace_seconds)
        if self.scheduler is not None:
            self.scheduler.stop()
        self.manager.stop()

    def wait(self) -> None:
        self._stopped.wait()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on the first address of ``host`` and ``port``.

    Bound here and handed to waitress, because waitress starts its worker threads before it
    binds and leaves them running when the bind fails.
    """
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address, family=family)


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``--grpc_channel_arguments`` as TF Serving reads it: comma-separated ``key=value``,
    integer values as integers."""
    arguments: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise StartupError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        arguments.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.model_server",
        description="TF-Serving-compatible local model server (development and tests; "
        "production runs the tensorflow/serving image). Flags are spelled as "
        "tensorflow_model_server spells them.",
    )
    defaults = ServerOptions()
    add = parser.add_argument
    add("--port", type=int, default=defaults.port, help="gRPC port (0 disables gRPC)")
    add("--rest_api_port", type=int, default=defaults.rest_api_port, help="REST port (0: off)")
    add("--model_name", default=defaults.model_name, help="name of the single model")
    add("--model_base_path", default=defaults.model_base_path, help="folder of version folders")
    add("--model_config_file", default="", help="text-format ModelServerConfig")
    add(
        "--file_system_poll_wait_seconds",
        type=float,
        default=defaults.file_system_poll_wait_seconds,
        help="seconds between scans of the base path (0: once, negative: never)",
    )
    add("--max_num_load_retries", type=int, default=defaults.max_num_load_retries)
    add("--load_retry_interval_micros", type=int, default=defaults.load_retry_interval_micros)
    for name in (
        "enable_model_warmup",
        "enable_grpc_healthcheck_service",
        "enable_batching",
        "allow_version_labels_for_unavailable_models",
    ):
        add(f"--{name}", type=bool_flag, nargs="?", const=True, default=getattr(defaults, name))
    add("--num_request_iterations_for_warmup", type=int, default=0)
    add("--rest_api_num_threads", type=int, default=0, help="REST worker threads (0: 4 x CPUs)")
    add("--grpc_max_threads", type=int, default=0, help="gRPC worker threads (0: 4 x CPUs)")
    add("--rest_api_timeout_in_ms", type=int, default=defaults.rest_api_timeout_in_ms)
    add("--grpc_channel_arguments", default="", help="comma-separated key=value gRPC arguments")
    add("--batching_parameters_file", default="", help="text BatchingParameters")
    add("--monitoring_config_file", default="", help="text MonitoringConfig (Prometheus)")
    add(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="re-read --model_config_file this often while serving (0: never)",
    )
    add(
        "--bind_address",
        default=defaults.bind_address,
        help="local server only: address to bind both ports to (default: all interfaces)",
    )
    add(
        "--max_request_bytes",
        type=int,
        default=defaults.max_request_bytes,
        help="local server only: largest accepted request body or gRPC message",
    )
    # Every other tensorflow_model_server flag is accepted and ignored (logged when given), so
    # that the same command lines run here; anything else is refused.
    for name in ignored_flags():
        add(f"--{name}", default=None, nargs="?", const="true", help=argparse.SUPPRESS)
    return parser


def ignored_flags() -> list[str]:
    """The tensorflow_model_server flags that the local server accepts but does not implement."""
    return [name for name in FLAG_TYPES if name not in ServerOptions.__dataclass_fields__]


def parse_options(argv: list[str] | None) -> ServerOptions | int:
    """The server's options, or the exit code when argparse ends the run (--help, bad flags)."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    for name in ignored_flags():
        if getattr(args, name) is not None:
            logger.warning("--%s is not implemented by the local server; ignored", name)
    fields = ServerOptions.__dataclass_fields__
    return ServerOptions(**{k: v for k, v in vars(args).items() if k in fields})


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # TensorFlow's Python logger narrates every restore at INFO.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def start_server(options: ServerOptions) -> ModelServer | None:
    """Builds and starts a server (blocking until every model is available), or prints TF
    Serving's start-up failure line and returns None."""
    try:
        server = ModelServer(options)
        server.start()
    except StartupError as error:
        print(f"Failed to start server. Error: {error}", file=sys.stdout, flush=True)
        return None
    return server


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    options = parse_options(argv)
    if isinstance(options, int):
        return options
    # Unlike tensorflow_model_server, which has no handler (SIGTERM kills it at once), the local
    # server stops gracefully: in-flight requests get SHUTDOWN_GRACE_SECONDS.
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("Received %s; shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = start_server(options)
    if server is None:
        return EXIT_START_FAILED
    while not stop_requested.wait(0.5):
        pass
    server.stop()
    return EXIT_OK
