"""TF Serving's JSON tensor encoding for the REST API: request documents in, NumPy arrays out,
and output tensors back to JSON.

Both request formats (row ``"instances"`` and columnar ``"inputs"``), ``{"b64": ...}`` strings,
the type checks with TF Serving's error messages, and its number formatting (``WriteDecimal``),
as the REST API documentation and TF Serving's ``json_tensor.cc`` define them. Pure functions
over a signature's input specs; ``rest.py`` does the HTTP around them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import grpc
import numpy as np
import tensorflow as tf

from serving.model_server.errors import ServingError, invalid_argument
from serving.savedmodel import TensorInfo

# The request document is quoted in error messages up to about this many characters.
DOC_QUOTE_LIMIT = 256


def parse_json(body: bytes) -> Any:
    """The request body as a JSON document; INVALID_ARGUMENT with TF Serving's message if not."""
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return json.loads(body)
    except UnicodeDecodeError as error:
        raise invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {error.start}"
        ) from error
    except json.JSONDecodeError as error:
        raise invalid_argument(
            f"JSON Parse error: Invalid value. at offset: {error.pos}"
        ) from error
    except RecursionError as error:
        raise invalid_argument("JSON Parse error: The document nests too deeply") from error


def signature_name_of(document: Any) -> str:
    """The request's ``signature_name`` ("" when absent), once the document is checked to be
    an object; INVALID_ARGUMENT with TF Serving's message if either is wrong."""
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {quote(document)} Is not object")
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise invalid_argument(
            f"JSON Value: {quote(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return signature_name


def check_examples_request(document: Any) -> None:
    """A classify or regress body, checked as TF Serving's FillClassifyRegressRequestFromJson
    checks it: an object, its ``signature_name``, ``context`` and non-empty ``examples``, every
    feature value a string, ``{"b64": ...}``, number or bool, or a list of one kind of them.

    No tf.Example is built: the local server answers a well-formed body with its predict-only
    refusal (``rest.py``).

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's message.
    """
    signature_name_of(document)
    if "context" in document:
        _check_example(document["context"])
    if "examples" not in document:
        # TF Serving says "classify" for regress too.
        raise invalid_argument(
            f"JSON Value: {quote(document)} When method is classify, key 'examples' is "
            "expected and was not found"
        )
    examples = document["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {quote(document)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid_argument(f"JSON Value: {quote(document)} 'examples' value is an empty array")
    for example in examples:
        _check_example(example)


def _check_example(example: Any) -> None:
    """One JSON tf.Example: an object of features (TF Serving's MakeExampleFromJsonObject)."""
    if not isinstance(example, dict):
        raise invalid_argument(
            f"Example must be JSON object but got JSON {_rapidjson_type(example)}"
        )
    for name, content in example.items():
        kind = None
        for value in content if isinstance(content, list) else [content]:
            kind = _feature_kind(name, value, kind)


def _feature_kind(name: str, value: Any, kind: str | None) -> str:
    """The feature list kind (bytes, float or int64) ``value`` goes to, which must be ``kind``
    when the feature already has one (TF Serving's AddValueToFeature)."""

    def same_kind(wanted: str) -> str:
        if kind not in (None, wanted):
            raise invalid_argument(
                f"Unexpected element type in feature: {name} expecting type: {kind}"
            )
        return wanted

    is_b64 = _is_b64(value) and isinstance(value["b64"], str)
    if value is None or isinstance(value, list) or (isinstance(value, dict) and not is_b64):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {_rapidjson_type(value)}"
        )
    if isinstance(value, bool):
        return same_kind("int64")
    if isinstance(value, dict):
        same_kind("bytes")
        _decode_b64(value["b64"])
        return "bytes"
    if isinstance(value, str):
        return same_kind("bytes")
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        same_kind("int64")
        if value >= 2**63:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        return "int64"
    # A decimal, or an integer beyond uint64 (rapidjson reads those as doubles).
    same_kind("float")
    number = float(value)
    if math.isfinite(number) and abs(number) > float(np.finfo(np.float32).max):
        raise invalid_argument(
            f"Cannot convert JSON value: {quote(value)} to float without loss of precision."
        )
    return "float"


def _rapidjson_type(value: Any) -> str:
    """The JSON type name TF Serving's JsonTypeString prints (True/False for booleans)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return _json_type(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _decode_b64(text: str) -> bytes:
    """The bytes of a ``{"b64": ...}`` value: standard base64 only, as TF Serving decodes it."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise invalid_argument("Unable to base64 decode") from error


def row_inputs(specs: dict[str, TensorInfo], document: dict) -> dict[str, np.ndarray]:
    """The row format: ``{"instances": [...]}``, one element per example, stacked by input."""
    instances = document["instances"]
    if not isinstance(instances, list):
        raise invalid_argument(
            f"JSON Value: {quote(document)} Expecting 'instances' to be an list/array"
        )
    if not instances:
        raise invalid_argument(f"JSON Value: {quote(document)} No values in 'instances' array")
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if len(specs) > 1 and not named:
        raise invalid_argument(
            "Expecting object but got list at item 0 of input list"
            if isinstance(instances[0], list)
            else "Expecting object but got value at item 0 of input list"
        )
    columns: dict[str, list[np.ndarray]] = {key: [] for key in specs}
    for index, element in enumerate(instances):
        element_named = isinstance(element, dict) and not _is_b64(element)
        if element_named != named:
            wanted, got = ("object", "list") if named else ("value/list", "object")
            raise invalid_argument(
                f"Expecting {wanted} but got {got} at item {index} of input list"
            )
        values = element if named else {next(iter(specs)): element}
        for key in values:
            if key not in specs:
                raise invalid_argument(
                    f"Failed to process element: {index} key: {key} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )
        for key, spec in specs.items():
            if key not in values:
                raise invalid_argument(
                    f"Failed to process element: {index} key: {key} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )
            try:
                array = _to_array(values[key], spec.dtype)
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: {error.message}"
                ) from error
            if columns[key] and columns[key][0].shape != array.shape:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: Expecting shape {list(columns[key][0].shape)} but got: "
                    f"{list(array.shape)}"
                )
            columns[key].append(array)
    return {key: np.stack(arrays) for key, arrays in columns.items()}


def columnar_inputs(specs: dict[str, TensorInfo], value: Any) -> dict[str, np.ndarray]:
    """The columnar format: the value of ``"inputs"``, one tensor per input (or the only one)."""
    if isinstance(value, dict) and not _is_b64(value):
        inputs = {}
        for key, spec in specs.items():
            if key not in value:
                raise invalid_argument(f"Missing named input: {key} in 'inputs' object.")
            inputs[key] = _to_array(value[key], spec.dtype)
        for key in value:
            if key not in specs:
                raise invalid_argument(f"JSON object: does not have named input: {key}")
        return inputs
    if len(specs) != 1:
        raise invalid_argument(
            f"'inputs' must be an object naming each of the inputs {sorted(specs)}"
        )
    ((key, spec),) = specs.items()
    return {key: _to_array(value, spec.dtype)}


def _to_array(value: Any, dtype: tf.dtypes.DType) -> np.ndarray:
    """A nested JSON list (or scalar) of one dtype to a rectangular NumPy array."""
    shape = _shape_of(value)
    flat: list[Any] = []
    _flatten(value, shape, 0, flat)
    converted = [_convert_scalar(item, dtype) for item in flat]
    if dtype == tf.string:
        array = np.empty(len(converted), dtype=object)
        array[:] = converted
    else:
        array = np.array(converted, dtype=dtype.as_numpy_dtype)
    return array.reshape(shape)


def _shape_of(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int], depth: int, out: list[Any]) -> None:
    if depth == len(shape):
        if isinstance(value, list):
            raise invalid_argument(
                f"Expecting shape {shape} but got: a list at depth {depth} (ragged nesting)"
            )
        out.append(value)
        return
    if not isinstance(value, list) or len(value) != shape[depth]:
        got = len(value) if isinstance(value, list) else 1
        raise invalid_argument(f"Expecting tensor size: {shape[depth]} but got: {got}")
    for item in value:
        _flatten(item, shape, depth + 1, out)


def _convert_scalar(value: Any, dtype: tf.dtypes.DType) -> Any:
    if dtype == tf.string:
        if isinstance(value, str):
            return value.encode("utf-8", errors="surrogatepass")
        if _is_b64(value) and isinstance(value["b64"], str):
            return _decode_b64(value["b64"])
    elif dtype.is_floating:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif dtype.is_integer:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if is_int and dtype.min <= value <= dtype.max:
            return value
    elif dtype == tf.bool:
        if isinstance(value, bool):
            return value
    else:
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"Conversion of JSON Value: {quote(value)} to type: {dtype.name} is not supported",
        )
    raise invalid_argument(
        f"JSON Value: {quote(value)} Type: {_json_type(value)} is not of expected type: "
        f"{dtype.name}"
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def quote(value: Any) -> str:
    """A JSON value as TF Serving quotes it in error messages (shortened)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= DOC_QUOTE_LIMIT else text[:DOC_QUOTE_LIMIT] + "..."


def encode_rows(outputs: dict[str, np.ndarray]) -> bytes:
    """The response to a row request: ``{"predictions": [...]}``, one element per example."""
    batch_sizes = {key: (value.shape[0] if value.ndim else None) for key, value in outputs.items()}
    for key, size in batch_sizes.items():
        if size is None:
            raise invalid_argument(f"Tensor name: {key} has no shape information ")
    sizes = set(batch_sizes.values())
    if len(sizes) > 1:
        key = next(iter(outputs))
        raise invalid_argument(
            f"Tensor name: {key} has inconsistent batch size: {batch_sizes[key]} expecting: "
            f"{max(sizes)}"
        )
    if len(outputs) == 1:
        ((key, value),) = outputs.items()
        rows = [_encode_tensor(value[i], key) for i in range(value.shape[0])]
    else:
        count = next(iter(sizes), 0)
        rows = [
            "{"
            + ", ".join(f"{json.dumps(k)}: {_encode_tensor(v[i], k)}" for k, v in outputs.items())
            + "}"
            for i in range(count)
        ]
    return ('{"predictions": [' + ", ".join(rows) + "]}").encode()


def encode_columns(outputs: dict[str, np.ndarray]) -> bytes:
    """The response to a columnar request: ``{"outputs": ...}``, whole tensors by output key."""
    if len(outputs) == 1:
        ((key, value),) = outputs.items()
        return b'{"outputs": ' + _encode_tensor(value, key).encode() + b"}"
    parts = [f"{json.dumps(k)}: {_encode_tensor(v, k)}" for k, v in outputs.items()]
    return ('{"outputs": {' + ", ".join(parts) + "}}").encode()


def _encode_tensor(value: np.ndarray | Any, name: str) -> str:
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return "[" + ", ".join(_encode_tensor(item, name) for item in value) + "]"
    item = value.item() if isinstance(value, np.generic | np.ndarray) else value
    if isinstance(item, bytes):
        if name.endswith("_bytes"):
            return json.dumps({"b64": base64.b64encode(item).decode("ascii")})
        return json.dumps(item.decode("utf-8", errors="replace"), ensure_ascii=False)
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, float):
        is_float32 = isinstance(value, np.floating) and value.dtype == np.float32
        return format_decimal(item, single_precision=is_float32)
    return json.dumps(item)


def format_decimal(value: float, single_precision: bool) -> str:
    """TF Serving's WriteDecimal: shortest ``%g`` of 6 digits that round-trips, else 9 or 17."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:.6g}"
    round_trips = (
        np.float32(float(text)) == np.float32(value) if single_precision else float(text) == value
    )
    if not round_trips:
        text = f"{value:.9g}" if single_precision else f"{value:.17g}"
    if not any(c in text for c in ".en"):
        text += ".0"
    return text
