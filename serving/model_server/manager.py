"""Model versions on disk -> loaded, servable versions, with TF Serving's lifecycle.

What this reproduces of TF Serving's ``ServerCore`` and ``AspiredVersionsManager``:
- a version is a child folder of the base path whose name is an int64 (``serving.versions``);
  others are ignored;
- the base paths are rescanned every ``file_system_poll_wait_seconds``; 0 scans once, at
  start-up, and negative never (``ModelManager._scan_due`` has the whole rule);
- the version policy (latest N, all, specific) picks the aspired versions;
- a failed load is retried ``max_num_load_retries`` times, then the version is END with the
  error and is not loaded again while it stays aspired;
- an old version is unloaded only once an aspired version is AVAILABLE (availability
  preserving), or when no version is aspired any more;
- warmup records (``assets.extra/tf_serving_warmup_requests``) are replayed before AVAILABLE;
- version labels map to versions that are AVAILABLE.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.contract import WARMUP_FILE
from serving.model_server.errors import ServingError, invalid_argument, not_found
from serving.model_server.metrics import ServingMetrics
from serving.model_server.predict import predict_with_bundle
from serving.savedmodel import SessionBundle
from serving.versions import version_folders

logger = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State
# TF Serving refuses warmup files with more records than this.
MAX_WARMUP_RECORDS = 1000
# How often the manager thread wakes up to retry loads and rescan, at most.
TICK_SECONDS = 0.2


@dataclass
class LoadSettings:
    """How versions are discovered and loaded (the server's flags)."""

    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    # A config reload may point a *new* label at a version that is not AVAILABLE.
    allow_version_labels_for_unavailable_models: bool = False


@dataclass
class Version:
    """One version of one model and where it is in its lifecycle."""

    number: int
    path: Path
    state: int = State.START
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    bundle: SessionBundle | None = None
    failed_attempts: int = 0
    next_attempt_at: float = 0.0
    # Requests currently running on this version; unloading waits for them.
    in_flight: int = 0


@dataclass
class ServedModel:
    """One entry of the model config and its versions."""

    config: model_server_config_pb2.ModelConfig
    versions: dict[int, Version] = field(default_factory=dict)
    aspired: set[int] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.config.name


class VersionLease:
    """A version held for one request; unloading waits until every lease is released."""

    def __init__(self, manager: ModelManager, version: Version):
        self._manager = manager
        self.version = version

    @property
    def bundle(self) -> SessionBundle:
        assert self.version.bundle is not None
        return self.version.bundle

    def __enter__(self) -> VersionLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._manager._changed:
            self.version.in_flight -= 1
            self._manager._changed.notify_all()


class ModelManager:
    """Owns every model's versions; a background thread keeps them in line with the disk."""

    def __init__(
        self,
        config: model_server_config_pb2.ModelServerConfig,
        settings: LoadSettings,
        metrics: ServingMetrics | None = None,
    ):
        self.metrics = metrics or ServingMetrics()
        self.settings = settings
        self._models = {model.name: ServedModel(model) for model in config.model_config_list.config}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_scan = float("-inf")
        # Whether the first scan (the only one when file_system_poll_wait_seconds is 0) ran.
        self._scanned_once = False

    # ----------------------------------------------------------------------------------------
    # Lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-manager", daemon=True)
        self._thread.start()

    def wait_until_ready(self, timeout: float | None = None) -> list[str]:
        """Blocks until every model has a version AVAILABLE or END, as TF Serving's startup does.

        Returns:
            Descriptions of the versions that ended in error while no version became
            AVAILABLE (an empty list means every model is servable).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._all_settled():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("models did not load in time")
                self._changed.wait(remaining if remaining is not None else 1.0)
            failures = []
            for model in self._models.values():
                if not any(v.state == State.AVAILABLE for v in model.versions.values()):
                    failures.extend(
                        f"{{name: {model.name} version: {v.number}}} due to error: "
                        f"{v.error_code.name}: {v.error_message}"
                        for v in model.versions.values()
                        if v.state == State.END and v.error_code != grpc.StatusCode.OK
                    )
            return failures

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._changed:
            for model in self._models.values():
                for version in model.versions.values():
                    if version.bundle is not None:
                        version.bundle.close()
                        version.bundle = None

    def _all_settled(self) -> bool:
        return all(
            any(v.state in (State.AVAILABLE, State.END) for v in model.versions.values())
            for model in self._models.values()
        )

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Applies a new model config while serving, as TF Serving's config reload does.

        Version policies, base paths and labels of the configured models change in place (the
        next scan loads or unloads versions to match), and new models are added. With
        ``file_system_poll_wait_seconds`` <= 0 there is no next scan (``_scan_due``): only the
        labels change, as in TF Serving, and a warning says so. A label may only point at an
        AVAILABLE version, except a new label when ``allow_version_labels_for_unavailable_models``
        is set.

        Raises:
            ServingError: FAILED_PRECONDITION (a label points at a version that is not
                available) or UNIMPLEMENTED (a model was removed); the config stays as it was.
        """
        new = {model.name: model for model in config.model_config_list.config}
        with self._changed:
            removed = sorted(set(self._models) - set(new))
            if removed:
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"the local server cannot remove models on reload ({', '.join(removed)}); "
                    "restart it with the new config",
                )
            for name, model_config in new.items():
                self._check_labels(self._models.get(name), model_config)
            if self.settings.file_system_poll_wait_seconds <= 0:
                self._warn_unscanned_changes(new)
            for name, model_config in new.items():
                if name in self._models:
                    self._models[name].config = model_config
                else:
                    self._models[name] = ServedModel(model_config)
            self._last_scan = float("-inf")  # rescan at once with the new policies
            self._changed.notify_all()
        logger.info("Reloaded the model config: %d model(s)", len(new))

    def _warn_unscanned_changes(self, new: dict[str, model_server_config_pb2.ModelConfig]) -> None:
        """Logs what a reload changes that no scan will apply (file_system_poll_wait_seconds
        <= 0): TF Serving accepts such a config, and then never loads what it asks for."""
        poll = self.settings.file_system_poll_wait_seconds
        for name, model_config in new.items():
            model = self._models.get(name)
            if model is None:
                change = f"the added model {name} is never scanned, so it never loads"
            elif (
                model.config.base_path != model_config.base_path
                or model.config.model_version_policy != model_config.model_version_policy
            ):
                change = f"the new version policy or base path of model {name} never applies"
            else:
                continue
            logger.warning(
                "--file_system_poll_wait_seconds=%g scans no reloaded config: %s; restart the "
                "server to apply it",
                poll,
                change,
            )

    def _check_labels(
        self, model: ServedModel | None, config: model_server_config_pb2.ModelConfig
    ) -> None:
        old = dict(model.config.version_labels) if model is not None else {}
        for label, number in config.version_labels.items():
            if old.get(label) == number:
                continue
            version = model.versions.get(number) if model is not None else None
            if version is not None and version.state == State.AVAILABLE:
                continue
            if label not in old and self.settings.allow_version_labels_for_unavailable_models:
                continue
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Request to assign label to version {number} of model {config.name}, which is "
                "not currently available for inference",
            )

    # ----------------------------------------------------------------------------------------
    # Requests

    def lease(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> VersionLease:
        """The version a request should run on, held until the lease is closed.

        Raises:
            ServingError: NOT_FOUND for an unknown model or version (TF Serving's
                "Servable not found for request: ..." text), INVALID_ARGUMENT for an unknown
                label.
        """
        with self._changed:
            model = self._models.get(name)
            if label is not None:
                version = self._label_version(model, name, label)
            if model is not None:
                available = [
                    v for v in model.versions.values() if v.state == State.AVAILABLE and v.bundle
                ]
                if version is None and available:
                    chosen = max(available, key=lambda v: v.number)
                    chosen.in_flight += 1
                    return VersionLease(self, chosen)
                for candidate in available:
                    if candidate.number == version:
                        candidate.in_flight += 1
                        return VersionLease(self, candidate)
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise not_found(f"Servable not found for request: {request}")

    def _label_version(self, model: ServedModel | None, name: str, label: str) -> int:
        if model is not None and label in model.config.version_labels:
            return int(model.config.version_labels[label])
        raise invalid_argument(f"Unrecognized servable version label: {label}")

    def status(
        self, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: every known version, highest first, or just ``version``."""
        with self._changed:
            model = self._models.get(name)
            versions = sorted(model.versions.values(), key=lambda v: -v.number) if model else []
            if version is not None:
                versions = [v for v in versions if v.number == version]
                if model is not None and model.versions and not versions:
                    raise not_found(f"Could not find version {version} of model {name}")
            if not versions:
                raise not_found(f"Could not find any versions of model {name}")
            response = get_model_status_pb2.GetModelStatusResponse()
            for entry in versions:
                status = response.model_version_status.add(version=entry.number, state=entry.state)
                status.status.error_code = entry.error_code.value[0]
                status.status.error_message = entry.error_message
            return response

    # ----------------------------------------------------------------------------------------
    # The manager thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # the thread must survive anything one model throws
                logger.exception("Model manager step failed")
            self._stop.wait(TICK_SECONDS)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._scan_due(now):
            self._last_scan, self._scanned_once = now, True
            # A copy: a config reload may add a model meanwhile.
            for model in list(self._models.values()):
                self._scan(model)
        for model in list(self._models.values()):
            self._load_due_versions(model)
            self._unload_unaspired_versions(model)

    def _scan_due(self, now: float) -> bool:
        """Whether the base paths are scanned now, by TF Serving's rule for
        ``--file_system_poll_wait_seconds`` (its ``FileSystemStoragePathSource``).

        A scan reads every configured model's base path and applies its version policy, so
        a new version, a new model, a changed policy or base path takes effect only at a scan.

        - Positive: a scan every that many seconds (and, unlike TF Serving, which keeps its
          schedule, one right after a config reload).
        - 0: one scan, when the manager starts, of the models in the start-up config. TF
          Serving polls once, when its source is connected, and a reload only swaps the
          source's config. So after a reload with 0, a new model is never scanned and never
          loads (TF Serving's reload then waits for it for ever, tensorflow/serving#1519),
          and a changed policy or base path never applies; changed labels do.
        - Negative: no scan at all, so no version loads and start-up waits for ever.
        """
        poll = self.settings.file_system_poll_wait_seconds
        if poll < 0:
            return False
        if not self._scanned_once:
            return True
        return poll > 0 and now - self._last_scan >= poll

    def _scan(self, model: ServedModel) -> None:
        base_path = Path(model.config.base_path)
        try:
            on_disk = version_folders(base_path)
        except OSError as error:
            logger.error(
                "FileSystemStoragePathSource encountered a filesystem access error: "
                "Could not find base path %s for servable %s: %s",
                base_path,
                model.name,
                error,
            )
            return
        if not on_disk:
            logger.warning(
                "No versions of servable %s found under base path %s. Did you forget to name "
                "your leaf directory as a number (eg. '/1/')?",
                model.name,
                base_path,
            )
        aspired = _aspired_versions(model.config, sorted(on_disk))
        with self._changed:
            for number in aspired - model.aspired:
                existing = model.versions.get(number)
                if existing is None or (existing.state == State.END and existing.bundle is None):
                    model.versions[number] = Version(number, on_disk[number])
                    logger.info("Aspiring version %d of servable %s", number, model.name)
            model.aspired = aspired
            self._changed.notify_all()

    def _load_due_versions(self, model: ServedModel) -> None:
        for number in sorted(model.aspired, reverse=True):
            version = model.versions[number]
            if version.state not in (State.START, State.LOADING):
                continue
            if time.monotonic() < version.next_attempt_at:
                continue
            with self._changed:
                version.state = State.LOADING
                self._changed.notify_all()
            try:
                bundle = self._load(model, version)
            except Exception as error:  # any load error ends up in the version's status
                self._record_failed_load(model, version, error)
                continue
            with self._changed:
                if number in model.aspired:
                    version.bundle, version.state = bundle, State.AVAILABLE
                    version.error_code, version.error_message = grpc.StatusCode.OK, ""
                    logger.info(
                        "Successfully loaded servable version {name: %s version: %d}",
                        model.name,
                        number,
                    )
                else:
                    bundle.close()
                    version.state = State.END
                self._changed.notify_all()

    def _record_failed_load(self, model: ServedModel, version: Version, error: Exception) -> None:
        if isinstance(error, ServingError):
            code, message = error.code, error.message
        elif isinstance(error, tf.errors.OpError):
            code, message = ServingError.from_op_error(error).code, error.message
        else:
            code, message = grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}"
        with self._changed:
            version.failed_attempts += 1
            if version.failed_attempts > self.settings.max_num_load_retries:
                version.state = State.END
                version.error_code, version.error_message = code, message
                logger.error(
                    "Loading servable {name: %s version: %d} failed after %d attempt(s): %s",
                    model.name,
                    version.number,
                    version.failed_attempts,
                    message,
                )
            else:
                version.next_attempt_at = (
                    time.monotonic() + self.settings.load_retry_interval_seconds
                )
                logger.warning(
                    "Loading servable {name: %s version: %d} failed (%s); retrying in %.1f s",
                    model.name,
                    version.number,
                    message,
                    self.settings.load_retry_interval_seconds,
                )
            self._changed.notify_all()

    def _unload_unaspired_versions(self, model: ServedModel) -> None:
        with self._changed:
            aspired_available = any(
                model.versions[n].state == State.AVAILABLE for n in model.aspired
            )
            for version in model.versions.values():
                if version.number in model.aspired or version.state != State.AVAILABLE:
                    continue
                # Availability preserving: keep serving the old version until a new one is up,
                # unless nothing is aspired any more (every version folder was deleted).
                if model.aspired and not aspired_available:
                    continue
                version.state = State.UNLOADING
                self._changed.notify_all()
                while version.in_flight:
                    self._changed.wait()
                if version.bundle is not None:
                    version.bundle.close()
                version.bundle = None
                version.state = State.END
                logger.info(
                    "Unloaded servable version {name: %s version: %d}", model.name, version.number
                )
                self._changed.notify_all()

    def _load(self, model: ServedModel, version: Version) -> SessionBundle:
        logger.info(
            "Loading servable version {name: %s version: %d} from %s",
            model.name,
            version.number,
            version.path,
        )
        model_path = str(version.path)
        try:
            bundle = SessionBundle(version.path)
        except Exception:
            self.metrics.count_load(model_path, "error")
            raise
        self.metrics.count_load(model_path, "success")
        started = time.monotonic()
        try:
            if self.settings.enable_model_warmup:
                self._warm_up(bundle)
        except Exception:
            self.metrics.observe_warmup(model_path, "error", time.monotonic() - started)
            bundle.close()
            raise
        if self.settings.enable_model_warmup:
            self.metrics.observe_warmup(model_path, "OK", time.monotonic() - started)
        return bundle

    def _warm_up(self, bundle: SessionBundle) -> None:
        """Replays the warmup PredictionLog records of a version, as TF Serving does on load."""
        path = bundle.path / WARMUP_FILE
        if not path.exists():
            logger.info("No warmup data file found at %s", path)
            return
        try:
            records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
        except tf.errors.OpError as error:
            raise ServingError(
                grpc.StatusCode.DATA_LOSS,
                f"Failed to read warmup file {path}: {error.message}. Please verify your warmup "
                "data is in TFRecord format.",
            ) from error
        if len(records) > MAX_WARMUP_RECORDS:
            raise invalid_argument(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
        for record in records:
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except Exception as error:
                raise invalid_argument(f"Failed to parse warmup record from {path}") from error
            if log.WhichOneof("log_type") != "predict_log":
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    "Unsupported log_type for warmup: " + str(log.WhichOneof("log_type")),
                )
            for _ in range(max(1, self.settings.num_request_iterations_for_warmup)):
                predict_with_bundle(bundle, log.predict_log.request)
        logger.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d.",
            path,
            len(records),
        )


def _aspired_versions(config: model_server_config_pb2.ModelConfig, on_disk: list[int]) -> set[int]:
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(on_disk)
    if choice == "specific":
        wanted = set(policy.specific.versions)
        for missing in sorted(wanted - set(on_disk)):
            logger.warning(
                "Version %d of servable %s was not found in the file system", missing, config.name
            )
        return wanted & set(on_disk)
    count = max(1, policy.latest.num_versions) if choice == "latest" else 1
    return set(on_disk[-count:])
