"""tensorflow_model_server's flag rules (serving/model_server/tf_serving_flags.py), which the
tests of our command lines and the stand-in image rely on."""

from serving.model_server import tf_serving_flags
from serving.model_server.server import build_parser, ignored_flags


def test_known_flags_with_good_values_parse():
    parsed = tf_serving_flags.parse(
        ["--port=8500", "--enable_batching", "--enable_batching=false", "--model_name=imdb"]
    )
    assert parsed.values == {"port": "8500", "enable_batching": "false", "model_name": "imdb"}
    assert parsed.unknown == [] and parsed.bad_values == []


def test_what_the_binary_would_not_recognise_is_unknown():
    parsed = tf_serving_flags.parse(
        ["--enable_batchng=true", "--port", "8500", "-port=1", "--rest-api-port=8501"]
    )
    assert parsed.unknown == [
        "--enable_batchng=true",
        "--port",
        "8500",
        "-port=1",
        "--rest-api-port=8501",
    ]
    assert parsed.values == {}


def test_values_the_binary_refuses_are_named():
    refused = [
        "--port=abc",
        "--enable_batching=yes",
        "--port=99999999999",
        "--per_process_gpu_memory_fraction=x",
    ]
    parsed = tf_serving_flags.parse(refused)
    assert [problem.split(":")[0] for problem in parsed.bad_values] == refused


def test_problems_reads_as_sentences():
    assert tf_serving_flags.problems(["--port=8500"]) == []
    (problem,) = tf_serving_flags.problems(["--model_config_fle=/x"])
    assert "'--model_config_fle=/x'" in problem and "unknown argument" in problem


def test_the_local_server_accepts_every_flag_of_the_binary():
    parser = build_parser()
    for name, kind in tf_serving_flags.FLAG_TYPES.items():
        value = {"bool": "true", "string": "x", "float": "0.5"}.get(kind, "1")
        assert parser.parse_args([f"--{name}={value}"]) is not None, name
    assert "tensorflow_intra_op_parallelism" in ignored_flags()
    assert "grpc_max_threads" not in ignored_flags()  # implemented: the gRPC pool size
