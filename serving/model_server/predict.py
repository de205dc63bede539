"""Predict on a loaded version: request tensors in, output tensors out, TF Serving's checks.

Shared by the gRPC and the REST front ends; each turns its wire format into NumPy arrays and
back, and this module does the rest: the input/output key, dtype and rank checks, in TF
Serving's words, then the run (``session_run.py``, directly or through the batch scheduler).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

from serving.contract import SIGNATURE_NAME
from serving.model_server.errors import ServingError, invalid_argument
from serving.model_server.session_run import run_bundle
from serving.model_server.tensor_proto import tensor_from_proto
from serving.savedmodel import SessionBundle, SignatureError

if TYPE_CHECKING:
    from serving.model_server.batching import BatchScheduler


def check_signature(bundle: SessionBundle, signature_name: str) -> str:
    """The signature to run (the default when empty); FAILED_PRECONDITION if it is missing."""
    name = signature_name or SIGNATURE_NAME
    if name not in bundle.signature_defs:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.'
        )
    return name


def check_input_keys(bundle: SessionBundle, signature_name: str, keys: list[str]) -> None:
    """INVALID_ARGUMENT, in TF Serving's words, unless ``keys`` are the signature's input keys.

    TF Serving checks them before it parses any input tensor (predict_util.cc).
    """
    expected_inputs = bundle.inputs(signature_name)
    if set(keys) == set(expected_inputs):
        return
    extra = sorted(set(keys) - set(expected_inputs))
    missing = sorted(set(expected_inputs) - set(keys))
    if len(keys) != len(expected_inputs):
        sent, wanted = ",".join(sorted(keys)), ",".join(sorted(expected_inputs))
        raise invalid_argument(
            f"input size does not match signature: {len(keys)}!={len(expected_inputs)} "
            f"len({{{sent}}}) != len({{{wanted}}}). Sent extra: {{{','.join(extra)}}}. "
            f"Missing but required: {{{','.join(missing)}}}."
        )
    raise invalid_argument(
        f"input tensor alias not found in signature: {','.join(extra)}. Inputs expected to "
        f"be in the set {{{','.join(sorted(expected_inputs))}}}."
    )


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
        ServingError: INVALID_ARGUMENT for wrong keys, dtypes or ranks, or for an output that
            is no tensor (the init op's of a TF2 SavedModel); the TF runtime's code when the
            graph fails (e.g. DEADLINE_EXCEEDED after ``timeout_seconds``).
    """
    check_input_keys(bundle, signature_name, list(inputs))
    # The SignatureDef's own TensorInfos: the init op's output has no dtype to read.
    signature_outputs = bundle.signature_defs[signature_name].outputs
    outputs = list(signature_outputs)
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
    for key in outputs:
        if signature_outputs[key].dtype == types_pb2.DT_INVALID:
            # An operation, not a tensor (e.g. __saved_model_init_op's "NoOp"): TensorFlow's
            # session refuses the fetch before it looks at the feeds (subgraph.cc).
            name = signature_outputs[key].name
            raise invalid_argument(
                f"Tried to fetch data for '{name}', which produces no output.  To run to a node "
                f"but not fetch any data, pass '{name}' as an argument to the "
                "'target_node_names' argument of the Session::Run API."
            )
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
    """Runs a gRPC PredictRequest on ``bundle``; returns the signature name used and outputs.

    The steps and their order are TF Serving's: the signature, the input keys, each input
    parsed as ``Tensor::FromProto`` parses it (``tensor_proto.py``), then ``run_signature``.
    """
    signature_name = check_signature(bundle, request.model_spec.signature_name)
    check_input_keys(bundle, signature_name, list(request.inputs))
    inputs = {key: tensor_from_proto(key, proto) for key, proto in request.inputs.items()}
    outputs = run_signature(
        bundle, signature_name, inputs, list(request.output_filter), timeout_seconds, scheduler
    )
    return signature_name, outputs
