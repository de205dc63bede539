"""The command-line flags of ``tensorflow_model_server`` 2.21 and how the binary parses them.

Read from tensorflow/serving's ``model_servers/main.cc`` (the flag list) and ``server.h`` (the
types). The binary's parser (``tensorflow::Flags::Parse``) matches only ``--name=value``, and for
booleans also ``--name``; ``--name value`` (a space) and ``-name=value`` are *unknown*. It prints
``unknown argument: X`` for the first unknown argument and **starts anyway** with that flag's
default, so a misspelled flag in a Dockerfile or manifest is silent in production. A value that
does not parse (``--port=abc``) makes it print the usage and exit 255.

Used by the tests that check every command line we ship (Dockerfile CMD, compose, Kubernetes
args, the image's entrypoint) and by the local server, which accepts every flag listed here so
that the same command lines run against it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Flag name -> value type, as server.h and main.cc declare them.
FLAG_TYPES: dict[str, str] = {
    "port": "int32",
    "grpc_socket_path": "string",
    "rest_api_port": "int32",
    "rest_api_num_threads": "int32",
    "rest_api_timeout_in_ms": "int32",
    "rest_api_enable_cors_support": "bool",
    "enable_batching": "bool",
    "allow_version_labels_for_unavailable_models": "bool",
    "batching_parameters_file": "string",
    "enable_per_model_batching_parameters": "bool",
    "model_config_file": "string",
    "model_config_file_poll_wait_seconds": "int32",
    "model_name": "string",
    "model_base_path": "string",
    "num_load_threads": "int32",
    "num_unload_threads": "int32",
    "max_num_load_retries": "int32",
    "load_retry_interval_micros": "int64",
    "file_system_poll_wait_seconds": "int32",
    "flush_filesystem_caches": "bool",
    "tensorflow_session_parallelism": "int64",
    "tensorflow_session_config_file": "string",
    "tensorflow_intra_op_parallelism": "int64",
    "tensorflow_inter_op_parallelism": "int64",
    "use_alts_credentials": "bool",
    "ssl_config_file": "string",
    "platform_config_file": "string",
    "per_process_gpu_memory_fraction": "float",
    "saved_model_tags": "string",
    "grpc_channel_arguments": "string",
    "grpc_max_threads": "int32",
    "enable_model_warmup": "bool",
    "num_request_iterations_for_warmup": "int32",
    "version": "bool",
    "monitoring_config_file": "string",
    "remove_unused_fields_from_bundle_metagraph": "bool",
    "prefer_tflite_model": "bool",
    "num_tflite_pools": "int32",
    "num_tflite_interpreters_per_pool": "int32",
    "enable_signature_method_name_check": "bool",
    "xla_cpu_compilation_enabled": "bool",
    "xla_gpu_compilation_enabled": "bool",
    "enable_profiler": "bool",
    "thread_pool_factory_config_file": "string",
    "mixed_precision": "string",
    "skip_initialize_tpu": "bool",
    "enable_grpc_healthcheck_service": "bool",
    "enable_serialization_as_tensor_content": "bool",
}

_INT_RANGES = {"int32": 2**31, "int64": 2**63}


@dataclass(frozen=True)
class ParsedFlags:
    """A command line split the way the binary splits it."""

    values: dict[str, str]  # flag -> its raw value ("true" for a bare boolean flag)
    unknown: list[str]  # arguments the binary does not recognise, in order
    bad_values: list[str]  # "--flag=value: why", for values the binary would refuse


def value_problem(flag: str, value: str) -> str | None:
    """Why the binary would refuse ``--flag=value``, or None when it accepts it."""
    kind = FLAG_TYPES[flag]
    if kind == "bool":
        # tensorflow::Flags accepts true/false and 1/0 for booleans.
        return None if value in ("true", "false", "1", "0") else "expected true or false"
    if kind in _INT_RANGES:
        try:
            number = int(value, 10)
        except ValueError:
            return f"expected an integer ({kind})"
        limit = _INT_RANGES[kind]
        return None if -limit <= number < limit else f"out of range for {kind}"
    if kind == "float":
        try:
            float(value)
        except ValueError:
            return "expected a number"
    return None


def parse(argv: list[str]) -> ParsedFlags:
    """Splits ``argv`` (without the program name) into the binary's known flags, unknown
    arguments and refused values. For a repeated flag the last value wins, as in the binary."""
    values: dict[str, str] = {}
    unknown: list[str] = []
    bad_values: list[str] = []
    for argument in argv:
        name, separator, value = argument.removeprefix("--").partition("=")
        if not argument.startswith("--") or name not in FLAG_TYPES:
            unknown.append(argument)
            continue
        if not separator:
            if FLAG_TYPES[name] != "bool":
                unknown.append(argument)  # --port 8500: the binary does not take a space
                continue
            value = "true"
        problem = value_problem(name, value)
        if problem:
            bad_values.append(f"{argument}: {problem}")
        else:
            values[name] = value
    return ParsedFlags(values, unknown, bad_values)


def problems(argv: list[str]) -> list[str]:
    """What in a command line the binary would ignore or refuse, as readable sentences; empty
    when every argument is a flag it knows with a value it accepts."""
    parsed = parse(argv)
    return [
        *(
            f"{argument!r}: not a tensorflow_model_server flag (the binary would say "
            "'unknown argument' and start with the default)"
            for argument in parsed.unknown
        ),
        *(f"{problem} (the binary would exit 255)" for problem in parsed.bad_values),
    ]
