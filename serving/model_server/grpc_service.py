"""gRPC front end: ``tensorflow.serving.PredictionService`` and ``ModelService``.

Messages and status codes follow TF Serving's ``prediction_service.proto`` and
``model_service.proto``. A peer of ``rest.py`` over the same manager and predict step; the
tensors in the messages go through ``tensor_proto``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_server.batching import BatchScheduler
from serving.model_server.errors import ServingError, invalid_argument
from serving.model_server.manager import ModelManager, VersionLease
from serving.model_server.predict import check_signature, predict_with_bundle
from serving.model_server.tensor_proto import ndarray_to_tensor_proto

logger = logging.getLogger(__name__)

Response = TypeVar("Response")
# The only metadata field TF Serving knows.
SIGNATURE_DEF_FIELD = "signature_def"
# What classify/regress/MultiInference answer: this server serves predict signatures only.
PREDICT_ONLY_MESSAGE = (
    "Expected {kind} signature method_name to be tensorflow/serving/{method}. "
    "Was: tensorflow/serving/predict (the local server runs predict signatures only)"
)


def lease_for_spec(manager: ModelManager, spec: model_pb2.ModelSpec) -> VersionLease:
    """Resolves a ModelSpec (name plus optional version or label) to a held version."""
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return manager.lease(spec.name, version=spec.version.value)
    if choice == "version_label":
        return manager.lease(spec.name, label=spec.version_label)
    return manager.lease(spec.name)


def _call(context: grpc.ServicerContext, handler: Callable[[], Response]) -> Response:
    """Runs a handler and turns a ServingError into the gRPC status TF Serving returns."""
    try:
        return handler()
    except ServingError as error:
        context.abort(error.code, error.grpc_details())
    except Exception as error:  # a bug must not kill the server; report it as INTERNAL
        logger.exception("gRPC handler failed")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


def _deadline_seconds(context: grpc.ServicerContext) -> float | None:
    # The client deadline becomes the session timeout, as in TF Serving.
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e8 else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference are refused."""

    def __init__(self, manager: ModelManager, scheduler: BatchScheduler | None = None):
        self._manager = manager
        self._scheduler = scheduler

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext):
        started = time.perf_counter()
        metrics = self._manager.metrics
        name = request.model_spec.name

        def handle() -> predict_pb2.PredictResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            with lease_for_spec(self._manager, request.model_spec) as lease:
                run_started = time.perf_counter()
                signature_name, outputs = predict_with_bundle(
                    lease.bundle, request, _deadline_seconds(context), self._scheduler
                )
                metrics.observe_runtime(name, "Predict", time.perf_counter() - run_started)
                response = predict_pb2.PredictResponse()
                response.model_spec.name = request.model_spec.name
                response.model_spec.version.value = lease.version.number
                response.model_spec.signature_name = signature_name
                for key, value in outputs.items():
                    response.outputs[key].CopyFrom(ndarray_to_tensor_proto(value))
                return response

        def counted() -> predict_pb2.PredictResponse:
            try:
                response = handle()
            except ServingError as error:
                metrics.count_request(name, error.code.name)
                raise
            metrics.count_request(name, "OK")
            metrics.observe_request(name, "Predict", "GRPC", time.perf_counter() - started)
            return response

        return _call(context, counted)

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ):
        def handle() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            if not request.metadata_field:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for name in request.metadata_field:
                if name != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {name} is not supported")
            with lease_for_spec(self._manager, request.model_spec) as lease:
                return metadata_response(request.model_spec.name, lease)

        return _call(context, handle)

    def Classify(self, request, context: grpc.ServicerContext):
        return self._refuse(request, context, "classification", "classify")

    def Regress(self, request, context: grpc.ServicerContext):
        return self._refuse(request, context, "regression", "regress")

    def MultiInference(self, request, context: grpc.ServicerContext):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not supported by the local server"
        )

    def _refuse(self, request, context: grpc.ServicerContext, kind: str, method: str):
        def handle():
            with lease_for_spec(self._manager, request.model_spec) as lease:
                check_signature(lease.bundle, request.model_spec.signature_name)
                raise invalid_argument(PREDICT_ONLY_MESSAGE.format(kind=kind, method=method))

        return _call(context, handle)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest is not offered by the local server."""

    def __init__(self, manager: ModelManager):
        self._manager = manager

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ):
        def handle() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            spec = request.model_spec
            if not spec.name:
                raise invalid_argument("ModelSpec has no name specified.")
            version = spec.version.value if spec.HasField("version") else None
            return self._manager.status(spec.name, version)

        return _call(context, handle)

    def HandleReloadConfigRequest(self, request, context: grpc.ServicerContext):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "HandleReloadConfigRequest is not supported by the local server; restart it with "
            "the new --model_config_file",
        )


def metadata_response(
    model_name: str, lease: VersionLease
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """The signature_def metadata of the leased version, as TF Serving builds it."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model_name
    response.model_spec.version.value = lease.version.number
    packed = any_pb2.Any()
    packed.Pack(lease.bundle.signature_def_map())
    response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(packed)
    return response
