"""The exported SavedModel: versions, atomicity, and loading it as TF Serving's C++ loader does."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import contract
from serving.savedmodel import PYTHON_ONLY_OPS
from serving.versions import list_versions
from training import export
from training.config import TrainConfig
from training.model import build_classifier, build_text_model
from training.vectorize import Vocabulary, ngram_featurizer

# The op types the two families' exports use, each reviewed as a core TensorFlow op (registered
# in tensorflow/core/ops with CPU kernels in tensorflow/core/kernels), which tensorflow_model_server
# links; no op comes from a custom-op library (tensorflow-text, sentencepiece), which the binary
# would not have. A new op type in an export fails test_only_ops_that_tf_serving_has until reviewed.
OPS_IN_TF_SERVING = frozenset(
    """
    AddV2 AssignVariableOp BiasAdd Cast ConcatV2 Const Conv2D Cumsum DenseBincount
    DepthwiseConv2dNative DisableCopyOnRead Equal ExpandDims Fill FloorDiv FloorMod GatherV2
    Greater GreaterEqual HashTableV2 Identity If Less LookupTableFindV2 LookupTableImportV2 MatMul
    Max MaxPool Maximum Mean MergeV2Checkpoints Minimum Mul NoOp Pack Placeholder Prod
    RaggedTensorToTensor ReadVariableOp Relu Reshape RestoreV2 Rsqrt SaveV2 Select SelectV2 Shape
    ShardedFilename Sigmoid Size SparseSegmentSumWithNumSegments Square Squeeze
    StatefulPartitionedCall StaticRegexFullMatch StaticRegexReplace StridedSlice StringJoin
    StringLower StringSplitV2 Unique UnsortedSegmentSum VarHandleOp Where
    """.split()  # noqa: SIM905 (a word list reads better than 64 quoted names)
)

POSITIVE = "A wonderful, brilliant film. I loved every minute of it. Highly recommended."
NEGATIVE = "An awful, boring film. A complete waste of time. Avoid it."


def untrained_text_model():
    vocabulary = Vocabulary(["good", "bad", "good film"], np.ones(3, np.float32), 2, "nb")
    featurizer = ngram_featurizer(vocabulary)
    classifier = build_classifier(featurizer.ngrams.width, TrainConfig(hidden_units=4))
    return build_text_model(featurizer, classifier)


def test_tf_serving_style_session_load(exported_version):
    """TF1 session over the `serve` MetaGraph, feeding and fetching SignatureDef tensor names."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, [contract.SAVED_MODEL_TAG], str(exported_version)
        )
        signature = meta_graph.signature_def[contract.SIGNATURE_NAME]
        assert signature.method_name == contract.PREDICT_METHOD_NAME
        review = signature.inputs[contract.INPUT_KEY]
        assert review.dtype == tf.string.as_datatype_enum
        assert [d.size for d in review.tensor_shape.dim] == [-1]
        assert set(signature.outputs) == {contract.OUTPUT_PROBABILITY, contract.OUTPUT_LABEL}
        probability_info = signature.outputs[contract.OUTPUT_PROBABILITY]
        assert probability_info.dtype == tf.float32.as_datatype_enum
        assert [d.size for d in probability_info.tensor_shape.dim] == [-1]
        assert signature.outputs[contract.OUTPUT_LABEL].dtype == tf.string.as_datatype_enum
        outputs = session.run(
            {key: info.name for key, info in signature.outputs.items()},
            {review.name: [POSITIVE.encode(), NEGATIVE.encode(), b""]},
        )
    probability = outputs[contract.OUTPUT_PROBABILITY]
    labels = [label.decode() for label in outputs[contract.OUTPUT_LABEL]]
    assert probability.shape == (3,) and probability.dtype == np.float32
    assert probability[0] > 0.5 > probability[1]
    assert labels[:2] == [contract.POSITIVE_LABEL, contract.NEGATIVE_LABEL]
    # The label is the thresholded probability, for every row, the empty review included.
    expected = [contract.LABELS[int(p >= contract.DECISION_THRESHOLD)] for p in probability]
    assert labels == expected


def test_saved_model_cli_sees_a_string_signature(exported_version):
    """The check the deployment notes ask for (keras#19396: float input signatures)."""
    cli = os.path.join(os.path.dirname(os.sys.executable), "saved_model_cli")
    result = subprocess.run(
        [
            cli,
            "show",
            "--dir",
            str(exported_version),
            "--tag_set",
            "serve",
            "--signature_def",
            contract.SIGNATURE_NAME,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        "inputs['review'] tensor_info:\n      dtype: DT_STRING\n      shape: (-1)" in result.stdout
    )


def test_only_ops_that_tf_serving_has(exported_version):
    from serving.savedmodel import SessionBundle

    bundle = SessionBundle(exported_version)
    try:
        ops = bundle.op_types()
    finally:
        bundle.close()
    assert not ops & PYTHON_ONLY_OPS
    # Loading in TensorFlow proves little: a Python process has ops the C++ binary lacks.
    # Every op must be one reviewed as present in tensorflow_model_server.
    unreviewed = ops - OPS_IN_TF_SERVING
    assert not unreviewed, (
        f"the export uses ops not yet reviewed for tensorflow_model_server: {sorted(unreviewed)}; "
        "check each is a core TensorFlow op (tensorflow/core/ops, linked into the binary), not one "
        "from a custom-op library such as tensorflow-text, then add it to OPS_IN_TF_SERVING"
    )


def test_the_graph_tokenizes_with_text_vectorization(exported_version):
    from serving.savedmodel import SessionBundle

    bundle = SessionBundle(exported_version)
    try:
        graph_def = bundle.meta_graph.graph_def
        names = [node.name for node in graph_def.node] + [
            node.name for function in graph_def.library.function for node in function.node_def
        ]
        ops = bundle.op_types()
    finally:
        bundle.close()
    assert any("text_vectorization" in name for name in names)
    assert "StringSplitV2" in ops and "LookupTableFindV2" in ops
    # N-grams are integers made from word ids: no n-gram string is built while serving.
    assert "StringNGrams" not in ops


def test_a_sharded_batch_predicts_as_reviews_one_by_one(exported_version):
    from serving.savedmodel import SessionBundle

    reviews = [f"{POSITIVE} {i}" if i % 3 else f"{NEGATIVE} {i}" for i in range(33)]
    assert len(reviews) >= export.MIN_SHARDED_BATCH  # cut into export.SERVING_SHARDS parts
    bundle = SessionBundle(exported_version)

    def run(texts: list[str]) -> np.ndarray:
        inputs = {contract.INPUT_KEY: np.array(texts, dtype=object)}
        return bundle.run(contract.SIGNATURE_NAME, inputs)[contract.OUTPUT_PROBABILITY]

    try:
        batch = run(reviews)
        one_by_one = np.concatenate([run([review]) for review in reviews])
    finally:
        bundle.close()
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-5, atol=1e-6)


def test_empty_blank_and_10_megabyte_reviews_get_predictions(exported_version):
    from serving.savedmodel import SessionBundle

    ten_megabytes = "a great film " * (10 * 1024 * 1024 // 13)
    reviews = ["", "   ", "\t\n", "film", ten_megabytes, POSITIVE]
    bundle = SessionBundle(exported_version)
    try:
        inputs = {contract.INPUT_KEY: np.array(reviews, dtype=object)}
        outputs = bundle.run(contract.SIGNATURE_NAME, inputs)
    finally:
        bundle.close()
    probability = outputs[contract.OUTPUT_PROBABILITY]
    assert probability.shape == (len(reviews),)
    assert np.isfinite(probability).all() and ((probability >= 0) & (probability <= 1)).all()


def test_assets_extra_holds_warmup_config_and_evaluation(exported_version):
    records = list(tf.data.TFRecordDataset(str(exported_version / contract.WARMUP_FILE)))
    assert 1 <= len(records) <= 1000
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    request = log.predict_log.request
    assert request.model_spec.signature_name == contract.SIGNATURE_NAME
    assert request.inputs[contract.INPUT_KEY].dtype == tf.string.as_datatype_enum
    evaluation = json.loads((exported_version / "assets.extra" / "evaluation.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"):
        assert key in evaluation
    assert sum(map(sum, evaluation["confusion_matrix"]["matrix"])) == evaluation["num_samples"]
    config = json.loads((exported_version / "assets.extra" / "training_config.json").read_text())
    assert config["data_origin"] == "demo"
    assert evaluation["exported_model"].startswith("refit on all")


def test_trained_model_learned_the_demo_task(trained_model):
    _, result = trained_model
    assert result.version == 1
    assert result.evaluation["accuracy"] > 0.8


def test_versions_increase_and_are_never_overwritten(tmp_path):
    model = untrained_text_model()
    base = tmp_path / "imdb"
    assert export.export_model(model, base).name == "1"
    (base / "not-a-version").mkdir()
    assert export.export_model(model, base).name == "2"
    assert export.export_model(model, base, version=7).name == "7"
    with pytest.raises(export.ExportError, match="already exists"):
        export.export_model(model, base, version=2)
    assert list_versions(base) == [1, 2, 7]
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "7", "not-a-version"]


def test_failed_export_leaves_no_version_and_no_staging(tmp_path, monkeypatch):
    base = tmp_path / "imdb"

    def broken(path):
        raise export.ExportError("simulated failure")

    monkeypatch.setattr(export, "verify_export", broken)
    with pytest.raises(export.ExportError, match="simulated failure"):
        export.export_model(untrained_text_model(), base)
    assert list(base.iterdir()) == []


def test_staging_left_by_a_killed_export_is_removed(tmp_path):
    base = tmp_path / "imdb"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (base / f".export-1-{dead.pid}" / "variables").mkdir(parents=True)
    (base / f".export-5-{os.getpid()}").mkdir()  # a live export's staging is left alone
    export.export_model(untrained_text_model(), base)
    assert sorted(p.name for p in base.iterdir()) == [f".export-5-{os.getpid()}", "1"]


def test_verify_rejects_a_float_input_signature(tmp_path):
    class FloatModel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="review")])
        def serve(self, review):
            return {"probability": review, "label": tf.as_string(review)}

    module = FloatModel()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    with pytest.raises(export.ExportError, match="input 'review' has dtype DT_FLOAT"):
        export.verify_export(tmp_path / "1")
