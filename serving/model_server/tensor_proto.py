"""TensorProto to NumPy and back, for the gRPC front end, with TensorFlow's parsing rules.

``tensor_from_proto`` is TensorFlow's ``Tensor::FromProto`` (``tensorflow/core/framework/
tensor.cc``, with ``TensorShape::IsValid`` from ``tensor_shape.cc``), which TF Serving's Predict
runs on every input and answers INVALID_ARGUMENT "tensor parsing error: <alias>" when it fails:

- The shape must be a valid TensorShape: at most 254 dimensions, none negative (-1 included),
  and an element count that fits int64. ``unknown_rank`` is ignored, as TensorShape ignores it.
- DT_INVALID and dtypes TensorFlow does not know are refused, even for an empty tensor.
- A shape with no elements (e.g. ``[0]``) gives an empty tensor; its values are not read.
- A set ``tensor_content`` must hold exactly the declared elements.
- Otherwise the dtype's repeated field (``string_val``, ``float_val``...) is read: of more
  values than elements only the first count, with fewer the last value repeats up to the
  shape, and with none every element is the dtype's zero (``b""`` for strings).

One deliberate difference: TensorFlow allocates and fills the declared shape, so a 30-byte
message declaring ``[2**28]`` strings makes TF Serving allocate gigabytes (it fails only when the
allocation does). The local server refuses, with the same message, a tensor that needs more than
``MAX_PADDED_ELEMENTS`` elements beyond the values sent, before it allocates anything.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.model_server.errors import ServingError, invalid_argument

# Most dimensions a TensorShape holds (TensorShape::MaxDimensions()).
MAX_DIMS = 254
# Largest element count of a TensorShape (int64).
MAX_ELEMENTS = 2**63 - 1
# Most elements the local server fills by repeating the last value sent (or the zero value):
# the memory a request may claim beyond its own size. TF Serving has no such limit.
MAX_PADDED_ELEMENTS = 2**20

# Each dtype the local server reads: its TensorProto repeated field and NumPy dtype.
_FIELDS: dict[int, tuple[str, type]] = {
    types_pb2.DT_FLOAT: ("float_val", np.float32),
    types_pb2.DT_DOUBLE: ("double_val", np.float64),
    types_pb2.DT_INT32: ("int_val", np.int32),
    types_pb2.DT_INT16: ("int_val", np.int16),
    types_pb2.DT_INT8: ("int_val", np.int8),
    types_pb2.DT_UINT8: ("int_val", np.uint8),
    types_pb2.DT_UINT16: ("int_val", np.uint16),
    types_pb2.DT_INT64: ("int64_val", np.int64),
    types_pb2.DT_UINT32: ("uint32_val", np.uint32),
    types_pb2.DT_UINT64: ("uint64_val", np.uint64),
    types_pb2.DT_BOOL: ("bool_val", np.bool_),
    types_pb2.DT_HALF: ("half_val", np.float16),  # the field holds the 16-bit patterns
    types_pb2.DT_COMPLEX64: ("scomplex_val", np.complex64),  # real, imaginary pairs
    types_pb2.DT_COMPLEX128: ("dcomplex_val", np.complex128),
    types_pb2.DT_STRING: ("string_val", object),
}
# Dtypes TensorFlow parses but the local server has no NumPy form for. No signature input of
# a served Keras model takes them, so TF Serving's session refuses them: INVALID_ARGUMENT.
_NOT_READ = {
    getattr(types_pb2, name)
    for name in (
        "DT_BFLOAT16",
        "DT_QINT8",
        "DT_QUINT8",
        "DT_QINT16",
        "DT_QUINT16",
        "DT_QINT32",
        "DT_RESOURCE",
        "DT_VARIANT",
        "DT_FLOAT8_E5M2",
        "DT_FLOAT8_E4M3FN",
        "DT_FLOAT8_E4M3FNUZ",
        "DT_FLOAT8_E4M3B11FNUZ",
        "DT_FLOAT8_E5M2FNUZ",
        "DT_INT4",
        "DT_UINT4",
    )
}
# Integer dtypes whose values travel in int_val (int32).
_NARROW_INTS = (np.int8, np.int16, np.uint8, np.uint16)
# The real dtype of each complex dtype's value pairs (scomplex_val, dcomplex_val).
_COMPLEX_PARTS = {np.complex64: np.float32, np.complex128: np.float64}
# The repeated field of each dtype TF Serving writes values to; others go as tensor_content.
_RESPONSE_FIELDS = {
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


def tensor_from_proto(alias: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The input ``alias`` of a PredictRequest as an array, parsed as TF's ``Tensor::FromProto``.

    Raises:
        ServingError: INVALID_ARGUMENT "tensor parsing error: <alias>" (with the reason) where
            TensorFlow's parse fails, or where the tensor would need more than
            ``MAX_PADDED_ELEMENTS`` elements that were not sent; INVALID_ARGUMENT for a dtype
            TensorFlow parses but no signature input here takes (DT_RESOURCE, DT_VARIANT...).
    """

    def parsing_error(reason: str) -> ServingError:
        return invalid_argument(f"tensor parsing error: {alias} ({reason})")

    shape = [dim.size for dim in proto.tensor_shape.dim]
    if len(shape) > MAX_DIMS:
        raise parsing_error(f"{len(shape)} dimensions, at most {MAX_DIMS} allowed")
    if any(size < 0 for size in shape):
        raise parsing_error(f"shape {shape} has a negative dimension")
    count = 1
    for size in shape:
        count *= size
    if count > MAX_ELEMENTS:
        raise parsing_error(f"shape {shape} holds more than {MAX_ELEMENTS} elements")
    dtype = proto.dtype
    if dtype in _NOT_READ:
        raise invalid_argument(
            f"input {alias!r} is a {types_pb2.DataType.Name(dtype)} tensor, which no signature "
            "input of the local server accepts"
        )
    if dtype not in _FIELDS:
        name = types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else dtype
        raise parsing_error(f"dtype {name} is not supported")
    field, numpy_dtype = _FIELDS[dtype]
    if count == 0:
        return np.empty(shape, dtype=numpy_dtype)
    if proto.tensor_content:
        flat = _from_content(proto.tensor_content, count, numpy_dtype)
        if flat is None:
            raise parsing_error(
                f"tensor_content of {len(proto.tensor_content)} bytes does not hold {count} "
                f"{types_pb2.DataType.Name(dtype)} elements"
            )
    else:
        values = getattr(proto, field)
        sent = len(values) // 2 if numpy_dtype in _COMPLEX_PARTS else len(values)
        if count - sent > MAX_PADDED_ELEMENTS:
            raise parsing_error(
                f"shape {shape} holds {count} elements but {sent} values were sent; the local "
                f"server repeats the last value for at most {MAX_PADDED_ELEMENTS} elements"
            )
        flat = _from_field(values, count, numpy_dtype)
    return flat.reshape(shape)


def _from_content(content: bytes, count: int, numpy_dtype: type) -> np.ndarray | None:
    """``count`` elements decoded from ``tensor_content``; None when it does not hold them."""
    if numpy_dtype is not object:
        # Raw little-endian elements, exactly count of them (TF's Helper<T>::Decode).
        if len(content) != count * np.dtype(numpy_dtype).itemsize:
            return None
        return np.frombuffer(content, dtype=np.dtype(numpy_dtype).newbyteorder("<")).astype(
            numpy_dtype
        )
    # Strings: count varint32 lengths, then the bytes of each (TF's DecodeStringList).
    if count > len(content):  # every length takes a byte at least
        return None
    lengths, position = [], 0
    for _ in range(count):
        length, shift = 0, 0
        while True:
            if position >= len(content) or shift > 28:
                return None
            byte = content[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        lengths.append(length & 0xFFFFFFFF)
    if sum(lengths) != len(content) - position:
        return None
    flat = np.empty(count, dtype=object)
    for index, length in enumerate(lengths):
        flat[index] = content[position : position + length]
        position += length
    return flat


def _from_field(values, count: int, numpy_dtype: type) -> np.ndarray:
    """``count`` elements from a repeated field: its first ones, the last one repeated, or
    zeros when it is empty (TF's FromProtoField)."""
    if numpy_dtype is object:
        flat = np.empty(count, dtype=object)
        sent = list(values[:count])
        flat[: len(sent)] = sent
        flat[len(sent) :] = sent[-1] if sent else b""
        return flat
    if numpy_dtype in _COMPLEX_PARTS:
        parts = np.asarray(values[: 2 * count], dtype=_COMPLEX_PARTS[numpy_dtype])
        sent = parts[: len(parts) // 2 * 2].view(numpy_dtype)
    elif numpy_dtype is np.float16:
        # half_val holds the 16 bits of each half in an int32.
        sent = np.asarray(values[:count], dtype=np.int64).astype(np.uint16).view(np.float16)
    elif numpy_dtype in _NARROW_INTS:
        # They travel as int32 and wrap, as TensorFlow's copy into them does.
        sent = np.asarray(values[:count], dtype=np.int64).astype(numpy_dtype)
    else:
        sent = np.asarray(values[:count], dtype=numpy_dtype)
    if len(sent) == count:
        return sent
    flat = np.zeros(count, dtype=numpy_dtype)
    flat[: len(sent)] = sent
    if len(sent):
        flat[len(sent) :] = sent[-1]
    return flat


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
    field_name = _RESPONSE_FIELDS.get(dtype.as_datatype_enum)
    if field_name is None:
        return tf.make_tensor_proto(array)
    values = array.ravel().tolist()
    if dtype == tf.string:
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
    getattr(proto, field_name).extend(values)
    return proto
