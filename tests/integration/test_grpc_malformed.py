"""gRPC Predict on malformed TensorProtos and model specs: TF Serving's status code for each, and
the server still serving afterwards.

The cases that tests/integration/test_local_server.py already covers (no model_spec, no name,
unknown model, version 99, unknown label, unknown signature, an extra input, DT_FLOAT, rank 2,
fewer or more values than the shape holds, bad output filters, a renamed input) are not
repeated. The expected codes are TF Serving's, read from its source: a TensorProto that
TensorFlow's ``Tensor::FromProto`` cannot parse (a negative dimension, -1 included, more than
int64 elements, bad ``tensor_content``, an unknown dtype, too many elements to allocate) is
INVALID_ARGUMENT "tensor parsing error"; a parsed tensor of the wrong dtype or rank is
INVALID_ARGUMENT from the signature check or the TensorFlow runtime; and ``unknown_rank`` is
ignored by ``TensorShape``, so such a tensor is predicted. Messages differ between releases and
from the local server's, so only the code is asserted.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

import grpc
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import contract

REVIEW = b"A wonderful, brilliant film. I loved every minute of it."
OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def tensor(
    dtype: int = types_pb2.DT_STRING,
    dims: tuple[int, ...] = (1,),
    unknown_rank: bool = False,
    **values,
) -> tensor_pb2.TensorProto:
    """A TensorProto with any dtype number, any dims and any value fields, valid or not."""
    return tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in dims],
            unknown_rank=unknown_rank,
        ),
        **values,
    )


def review(proto: tensor_pb2.TensorProto) -> Callable[[predict_pb2.PredictRequest], None]:
    """A change that replaces the review input by ``proto``."""
    return lambda request: request.inputs[contract.INPUT_KEY].CopyFrom(proto)


def valid_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = contract.MODEL_NAME
    request.inputs[contract.INPUT_KEY].CopyFrom(tensor(string_val=[REVIEW]))
    return request


def set_spec(**fields) -> Callable[[predict_pb2.PredictRequest], None]:
    """A change of the model spec: ``name``, ``version`` (a number) or ``version_label``."""

    def change(request: predict_pb2.PredictRequest) -> None:
        for name, value in fields.items():
            if name == "version":
                request.model_spec.version.value = value
            else:
                setattr(request.model_spec, name, value)

    return change


def drop_inputs(request: predict_pb2.PredictRequest) -> None:
    request.ClearField("inputs")


def rename_input_to_empty(request: predict_pb2.PredictRequest) -> None:
    request.inputs[""].CopyFrom(request.inputs.pop(contract.INPUT_KEY))


def init_op_signature(request: predict_pb2.PredictRequest) -> None:
    # The signature TF2 exports add beside serving_default: no inputs, one DT_INVALID output.
    request.model_spec.signature_name = "__saved_model_init_op"
    request.ClearField("inputs")


CASES = [
    # Inputs missing or misnamed.
    pytest.param(drop_inputs, INVALID, id="no-inputs"),
    pytest.param(rename_input_to_empty, INVALID, id="empty-input-key"),
    # Wrong dtypes, valid TensorProtos otherwise.
    pytest.param(review(tensor(types_pb2.DT_INT64, int64_val=[1])), INVALID, id="dtype-int64"),
    pytest.param(review(tensor(types_pb2.DT_BOOL, bool_val=[True])), INVALID, id="dtype-bool"),
    pytest.param(review(tensor(types_pb2.DT_HALF, half_val=[1])), INVALID, id="dtype-half"),
    pytest.param(
        review(tensor(types_pb2.DT_INVALID, string_val=[REVIEW])), INVALID, id="dtype-invalid"
    ),
    pytest.param(review(tensor(999, string_val=[REVIEW])), INVALID, id="dtype-unknown-number"),
    # FromProto parses them (a default handle, an empty variant); the session refuses the dtype.
    pytest.param(review(tensor(types_pb2.DT_RESOURCE)), INVALID, id="dtype-resource"),
    pytest.param(review(tensor(types_pb2.DT_VARIANT)), INVALID, id="dtype-variant"),
    # Bytes that do not decode.
    pytest.param(review(tensor(tensor_content=b"\x05ab")), INVALID, id="string-tensor-content"),
    pytest.param(
        review(tensor(types_pb2.DT_FLOAT, tensor_content=b"abc")),
        INVALID,
        id="float-tensor-content-short",
    ),
    # Wrong ranks and shapes.
    pytest.param(review(tensor(dims=(), string_val=[REVIEW])), INVALID, id="rank-0"),
    pytest.param(review(tensor(dims=(1, 1, 1), string_val=[REVIEW])), INVALID, id="rank-3"),
    pytest.param(review(tensor(dims=(1,) * 300, string_val=[REVIEW])), INVALID, id="rank-300"),
    pytest.param(
        review(tensor(dims=(2**32, 2**32), string_val=[REVIEW])),
        INVALID,
        id="elements-overflow-int64",
    ),
    pytest.param(
        # 2**62 strings cannot be allocated; TF Serving's FromProto fails, no memory is used.
        review(tensor(dims=(2**62,), string_val=[REVIEW])),
        INVALID,
        id="huge-dim",
    ),
    # A TensorShape has no unknown dimension: -1 is as negative as -5.
    pytest.param(review(tensor(dims=(-1,), string_val=[REVIEW])), INVALID, id="dim-minus-one"),
    pytest.param(review(tensor(dims=(-5,), string_val=[REVIEW])), INVALID, id="dim-negative"),
    pytest.param(
        # TensorShape ignores unknown_rank ("Unfortunately, TensorShape allows parsing protos
        # with unknown_shape() set", tensor_shape.cc): the dims stand and the review predicts.
        review(tensor(dims=(1,), unknown_rank=True, string_val=[REVIEW])),
        OK,
        id="unknown-rank",
    ),
    # Model specs not covered by test_local_server.py.
    pytest.param(set_spec(version=0), NOT_FOUND, id="version-0"),
    pytest.param(set_spec(version=-1), NOT_FOUND, id="version-negative"),
    pytest.param(set_spec(name="nosuch", version=99), NOT_FOUND, id="unknown-model-and-version"),
    pytest.param(set_spec(name="nosuch", version_label="x"), INVALID, id="unknown-model-label"),
    pytest.param(set_spec(version_label=""), INVALID, id="empty-label"),
    # No inputs to check; fetching its "NoOp" output fails in the session.
    pytest.param(init_op_signature, INVALID, id="signature-without-inputs"),
]


@pytest.fixture
def stub(grpc_target):
    with grpc.insecure_channel(grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.mark.parametrize(("change", "code"), CASES)
def test_malformed_predict_gets_tf_servings_code_and_the_server_survives(stub, change, code):
    request = valid_request()
    change(request)
    try:
        stub.Predict(request, timeout=30)
        answered = grpc.StatusCode.OK
    except grpc.RpcError as error:
        answered = error.code()
    # A dead server raises RpcError here, which no xfail mark hides.
    labels = stub.Predict(valid_request(), timeout=30).outputs[contract.OUTPUT_LABEL].string_val
    assert len(labels) == 1
    assert answered == code


def test_a_huge_shape_is_refused_fast_without_allocating(stub):
    """A 30-byte tensor declaring 2**28 strings: TF's FromProto would repeat the one value up
    to the shape. The local server refuses it before allocating: no memory peak."""
    request = valid_request()
    request.inputs[contract.INPUT_KEY].CopyFrom(tensor(dims=(2**28,), string_val=[REVIEW]))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; the server is here
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=30)
    peak_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert error.value.code() == INVALID
    assert "tensor parsing error: review" in error.value.details()
    # Padding would take 2 GiB (an 8-byte reference per element).
    assert peak_growth_mib < 64
