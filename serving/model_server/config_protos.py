"""TF Serving's text config messages that the tensorflow-serving-api package does not ship:
``BatchingParameters`` (session_bundle_config.proto) and ``MonitoringConfig``
(monitoring_config.proto). They are declared here, field for field, so that their files are
parsed by protobuf's own text-format parser, as TF Serving parses them: a typo or an unknown
field fails with its line."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_Field = descriptor_pb2.FieldDescriptorProto
_INT64 = ".google.protobuf.Int64Value"
_STRING = ".google.protobuf.StringValue"
_BOOL = ".google.protobuf.BoolValue"
# message -> fields: (name, type, message type or None, repeated).
_MESSAGES = {
    "BatchingParameters": [
        ("max_batch_size", _Field.TYPE_MESSAGE, _INT64, False),
        ("batch_timeout_micros", _Field.TYPE_MESSAGE, _INT64, False),
        ("max_enqueued_batches", _Field.TYPE_MESSAGE, _INT64, False),
        ("num_batch_threads", _Field.TYPE_MESSAGE, _INT64, False),
        ("thread_pool_name", _Field.TYPE_MESSAGE, _STRING, False),
        ("allowed_batch_sizes", _Field.TYPE_INT64, None, True),
        ("pad_variable_length_inputs", _Field.TYPE_BOOL, None, False),
        ("enable_large_batch_splitting", _Field.TYPE_MESSAGE, _BOOL, False),
        ("max_execution_batch_size", _Field.TYPE_MESSAGE, _INT64, False),
    ],
    "PrometheusConfig": [
        ("enable", _Field.TYPE_BOOL, None, False),
        ("path", _Field.TYPE_STRING, None, False),
    ],
    "MonitoringConfig": [
        (
            "prometheus_config",
            _Field.TYPE_MESSAGE,
            ".tensorflow.serving.PrometheusConfig",
            False,
        ),
    ],
}


def _message_classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="local_tfserving/config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    for message_name, fields in _MESSAGES.items():
        message = file.message_type.add(name=message_name)
        for number, (name, kind, type_name, repeated) in enumerate(fields, start=1):
            field = message.field.add(
                name=name,
                number=number,
                type=kind,
                label=_Field.LABEL_REPEATED if repeated else _Field.LABEL_OPTIONAL,
            )
            if type_name:
                field.type_name = type_name
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in _MESSAGES
    }


_CLASSES = _message_classes()
BatchingParameters = _CLASSES["BatchingParameters"]
MonitoringConfig = _CLASSES["MonitoringConfig"]
