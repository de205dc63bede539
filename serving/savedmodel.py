"""A SavedModel loaded the way TF Serving's C++ loader does: a TF1 session over a MetaGraph.

Shared by the export check (``serving/export_check.py``), the graph benchmark and the local
server.

TF Serving does not call Python functions of the SavedModel. It imports the ``serve`` MetaGraph
into a session, runs its init op (which fills lookup tables such as the n-gram and word
vocabularies), and for each request feeds and fetches the tensor *names* listed in the
SignatureDef. Loading our exports this way in tests and in the local server catches the problems
that TF Serving would hit (a missing init op, a float input signature, an unregistered op).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.contract import SAVED_MODEL_TAG

# Ops that only exist inside a Python process; TF Serving cannot load a graph that uses them.
PYTHON_ONLY_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


class SignatureError(Exception):
    """A request does not fit the signature (unknown key, wrong dtype or rank)."""


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a SignatureDef."""

    tensor_name: str
    dtype: tf.dtypes.DType
    # None when the rank is unknown; -1 for an unknown dimension.
    shape: tuple[int, ...] | None

    @property
    def dtype_name(self) -> str:
        """The DataType enum name TF Serving prints, e.g. DT_STRING."""
        return types_pb2.DataType.Name(self.dtype.as_datatype_enum)


def _tensor_info(proto: meta_graph_pb2.TensorInfo) -> TensorInfo:
    shape = None
    if not proto.tensor_shape.unknown_rank:
        shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    return TensorInfo(proto.name, tf.dtypes.as_dtype(proto.dtype), shape)


class SessionBundle:
    """A loaded SavedModel version: its MetaGraph, SignatureDefs and a session to run them.

    ``run`` may be called from many threads at once: a TF session is thread-safe and releases
    the GIL while it computes.
    """

    def __init__(self, path: str | Path, tags: tuple[str, ...] = (SAVED_MODEL_TAG,)):
        self.path = Path(path)
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        self._closed = threading.Event()
        try:
            # The TF1 loader is deprecated for Python users, and exactly what TF Serving runs.
            with self._graph.as_default(), deprecation.silence():
                self.meta_graph: meta_graph_pb2.MetaGraphDef = tf.compat.v1.saved_model.loader.load(
                    self._session, list(tags), str(path)
                )
        except Exception:
            self._session.close()
            raise
        self.signature_defs = dict(self.meta_graph.signature_def)
        # Read once per signature: every request asks for them, several times. Filled on
        # first use, since some signatures (e.g. the init op's) hold no valid dtypes.
        self._tensor_infos: dict[tuple[str, str], dict[str, TensorInfo]] = {}

    def op_types(self) -> set[str]:
        """Every op type in the graph and its function library."""
        graph_def = self.meta_graph.graph_def
        types = {node.op for node in graph_def.node}
        for function in graph_def.library.function:
            types.update(node.op for node in function.node_def)
        return types

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """Every SignatureDef of the version: the ``signature_def`` field of model metadata."""
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in self.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
        return signature_map

    def inputs(self, signature_name: str) -> dict[str, TensorInfo]:
        """The signature's input keys and their tensors (a shared dict: do not modify)."""
        return self._signature_tensors(signature_name, "inputs")

    def outputs(self, signature_name: str) -> dict[str, TensorInfo]:
        """The signature's output keys and their tensors (a shared dict: do not modify)."""
        return self._signature_tensors(signature_name, "outputs")

    def _signature_tensors(self, signature_name: str, side: str) -> dict[str, TensorInfo]:
        key = (signature_name, side)
        infos = self._tensor_infos.get(key)
        if infos is None:
            protos = getattr(self.signature_defs[signature_name], side)
            infos = self._tensor_infos[key] = {k: _tensor_info(v) for k, v in protos.items()}
        return infos

    def check_inputs(
        self, signature_name: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The inputs as arrays, checked against the signature's keys, dtypes and ranks.

        Call it once on inputs that come from outside (the local server does, per request and
        before batching); ``run`` does not check again.

        Raises:
            SignatureError: an input key is unknown or missing, or an input's dtype or rank
                does not fit the signature.
        """
        signature_inputs = self.inputs(signature_name)
        if set(inputs) != set(signature_inputs):
            raise SignatureError(
                f"inputs {sorted(inputs)} do not match signature {signature_name!r}, whose "
                f"inputs are {sorted(signature_inputs)}"
            )
        checked = {}
        for key, value in inputs.items():
            info = signature_inputs[key]
            value = np.asarray(value)
            if info.dtype == tf.string:
                if value.dtype.kind not in "OSU":
                    raise SignatureError(
                        f"input {key!r} expects {info.dtype_name} but {value.dtype} is provided"
                    )
            elif value.dtype.kind in "OSU" or not np.can_cast(
                value.dtype, info.dtype.as_numpy_dtype, casting="same_kind"
            ):
                raise SignatureError(
                    f"input {key!r} expects {info.dtype_name} but {value.dtype} is provided"
                )
            if info.shape is not None and value.ndim != len(info.shape):
                # TF Serving does not check the rank, but a wrong one can CHECK-fail some
                # kernels and abort the process (tensorflow/serving#1530).
                raise SignatureError(
                    f"input {key!r} must have rank {len(info.shape)} (shape "
                    f"{list(info.shape)}), got shape {list(value.shape)}"
                )
            checked[key] = value
        return checked

    def run(
        self,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        output_keys: list[str] | None = None,
        timeout_seconds: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs a signature: feeds its input tensors and fetches its output tensors.

        Args:
            signature_name: a key of ``signature_defs``.
            inputs: exactly the signature's input keys, each an array of the input's dtype and
                rank; pass inputs from outside through ``check_inputs`` first.
            output_keys: outputs to fetch; all of them when None.
            timeout_seconds: session run deadline; exceeding it raises DeadlineExceededError.

        Raises:
            tf.errors.OpError: the graph failed at run time.
        """
        signature_inputs = self.inputs(signature_name)
        signature_outputs = self.outputs(signature_name)
        feed = {signature_inputs[key].tensor_name: value for key, value in inputs.items()}
        keys = list(signature_outputs) if output_keys is None else output_keys
        fetches = {key: signature_outputs[key].tensor_name for key in keys}
        options = None
        if timeout_seconds is not None:
            options = tf.compat.v1.RunOptions(timeout_in_ms=max(1, int(timeout_seconds * 1000)))
        return self._session.run(fetches, feed_dict=feed, options=options)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._session.close()
