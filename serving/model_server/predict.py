"""Predict on a loaded version: request tensors in, output tensors out, TF Serving's checks.

Shared by the gRPC and the REST front ends; each turns its wire format into NumPy arrays and
back, and this module does the rest: the input/output key, dtype and rank checks, in TF
Serving's words, then the run (``session_run.py``, directly or through the batch scheduler).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from serving.contract import SIGNATURE_NAME
from serving.model_server.errors import ServingError, invalid_argument
from serving.model_server.session_run import run_bundle
from serving.savedmodel import SessionBundle, SignatureError

if TYPE_CHECKING:
    from serving.model_server.batching import BatchScheduler

# TensorProto repeated field that carries the values of each dtype, as TF Serving writes them.
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


def check_signature(bundle: SessionBundle, signature_name: str) -> str:
    """The signature to run (the default when empty); FAILED_PRECONDITION if it is missing."""
    name = signature_name or SIGNATURE_NAME
    if name not in bundle.signature_defs:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.'
        )
    return name


def run_signature(
    bundle: SessionBundle,
    signature_name: str,
    inputs: dict[str, np.ndarray],
    output_filter: list[str] | None = None,
    timeout_seconds: float | None = None,
    scheduler: BatchScheduler | None = None,
) -> dict[str, np.ndarray]:
    """Checks the request against the signature, runs it, and returns the outputs.

    With a ``scheduler`` (``--enable_batching``) the run joins a batch of concurrent requests;
    the request is checked on its own first, so that a bad one never fails a batch. This is the
    only check of a request's inputs: ``SessionBundle.run`` does not repeat it.

    Raises:
        ServingError: INVALID_ARGUMENT for wrong keys, dtypes or ranks; the TF runtime's code
            when the graph fails (e.g. DEADLINE_EXCEEDED after ``timeout_seconds``).
    """
    expected_inputs = bundle.inputs(signature_name)
    if set(inputs) != set(expected_inputs):
        extra = sorted(set(inputs) - set(expected_inputs))
        missing = sorted(set(expected_inputs) - set(inputs))
        if len(inputs) != len(expected_inputs):
            sent, wanted = ",".join(sorted(inputs)), ",".join(sorted(expected_inputs))
            raise invalid_argument(
                f"input size does not match signature: {len(inputs)}!={len(expected_inputs)} "
                f"len({{{sent}}}) != len({{{wanted}}}). Sent extra: {{{','.join(extra)}}}. "
                f"Missing but required: {{{','.join(missing)}}}."
            )
        raise invalid_argument(
            f"input tensor alias not found in signature: {','.join(extra)}. Inputs expected to "
            f"be in the set {{{','.join(sorted(expected_inputs))}}}."
        )
    outputs = list(bundle.outputs(signature_name))
    if output_filter:
        for key in output_filter:
            if key not in outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {key} Outputs expected to be "
                    f"in the set {{{','.join(sorted(outputs))}}}."
                )
        if len(set(output_filter)) != len(output_filter):
            duplicate = next(k for k in output_filter if output_filter.count(k) > 1)
            raise invalid_argument(f"duplicate output tensor alias: {duplicate}")
        outputs = list(output_filter)
    try:
        inputs = bundle.check_inputs(signature_name, inputs)
    except SignatureError as error:
        raise invalid_argument(str(error)) from error
    if scheduler is not None:
        return scheduler.run(bundle, signature_name, inputs, outputs, timeout_seconds)
    return run_bundle(bundle, signature_name, inputs, outputs, timeout_seconds)


def predict_with_bundle(
    bundle: SessionBundle,
    request: predict_pb2.PredictRequest,
    timeout_seconds: float | None = None,
    scheduler: BatchScheduler | None = None,
) -> tuple[str, dict[str, np.ndarray]]:
    """Runs a gRPC PredictRequest on ``bundle``; returns the signature name used and outputs."""
    signature_name = check_signature(bundle, request.model_spec.signature_name)
    inputs = {}
    for key, proto in request.inputs.items():
        try:
            inputs[key] = tf.make_ndarray(proto)
        except (ValueError, TypeError) as error:
            raise invalid_argument(f"input {key!r} is not a valid TensorProto: {error}") from error
    outputs = run_signature(
        bundle, signature_name, inputs, list(request.output_filter), timeout_seconds, scheduler
    )
    return signature_name, outputs


def ndarray_to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A TensorProto with typed repeated values (``float_val``, ``string_val``...), as TF Serving
    writes responses when ``--enable_serialization_as_tensor_content`` is off."""
    array = np.asarray(array)
    dtype = tf.dtypes.as_dtype(array.dtype if array.dtype.kind not in "OSU" else tf.string)
    proto = tensor_pb2.TensorProto(
        dtype=dtype.as_datatype_enum,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        ),
    )
    field_name = _VALUE_FIELDS.get(dtype.as_datatype_enum)
    if field_name is None:
        return tf.make_tensor_proto(array)
    values = array.ravel().tolist()
    if dtype == tf.string:
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
    getattr(proto, field_name).extend(values)
    return proto
