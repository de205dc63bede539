"""SessionBundle on a tiny hand-written SavedModel: its input checks, and that a Predict checks
each request's inputs once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from serving.contract import SIGNATURE_NAME
from serving.model_server.batching import BatchingOptions, BatchScheduler
from serving.model_server.predict import run_signature
from serving.savedmodel import SessionBundle, SignatureError


class Lengths(tf.Module):
    """Strings [-1] in, their lengths [-1] out."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return {"length": tf.strings.length(text)}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    module = Lengths()
    path = tmp_path_factory.mktemp("lengths") / "1"
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_NAME: module.serve})
    bundle = SessionBundle(path)
    yield bundle
    bundle.close()


def texts(*values: str) -> np.ndarray:
    return np.array(values, dtype=object)


def test_checked_inputs_run(bundle):
    inputs = bundle.check_inputs(SIGNATURE_NAME, {"text": texts("a", "abc")})
    assert bundle.run(SIGNATURE_NAME, inputs)["length"].tolist() == [1, 3]


@pytest.mark.parametrize(
    "inputs",
    [{"review": texts("a")}, {}, {"text": texts("a"), "extra": texts("b")}],
    ids=["unknown", "missing", "extra"],
)
def test_keys_that_do_not_fit_the_signature_are_a_signature_error(bundle, inputs):
    with pytest.raises(SignatureError, match=r"do not match signature 'serving_default'"):
        bundle.check_inputs(SIGNATURE_NAME, inputs)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array([1.0]), "expects DT_STRING but float64 is provided"),
        (texts("a", "b").reshape(2, 1), "must have rank 1"),
    ],
)
def test_dtypes_and_ranks_that_do_not_fit_are_a_signature_error(bundle, value, message):
    with pytest.raises(SignatureError, match=message):
        bundle.check_inputs(SIGNATURE_NAME, {"text": value})


@pytest.mark.parametrize("batching", [False, True], ids=["unbatched", "batched"])
def test_a_predict_checks_each_requests_inputs_once(bundle, monkeypatch, batching):
    checked = []
    check_inputs = bundle.check_inputs

    def counting_check_inputs(signature_name, inputs):
        checked.append(sorted(inputs))
        return check_inputs(signature_name, inputs)

    monkeypatch.setattr(bundle, "check_inputs", counting_check_inputs)
    scheduler = BatchScheduler(BatchingOptions(num_batch_threads=1)) if batching else None

    def predict(text: str) -> list[int]:
        outputs = run_signature(bundle, SIGNATURE_NAME, {"text": texts(text)}, scheduler=scheduler)
        return outputs["length"].tolist()

    try:
        with ThreadPoolExecutor(4) as pool:
            lengths = list(pool.map(predict, ["a", "bb", "ccc", "dddd"]))
    finally:
        if scheduler is not None:
            scheduler.stop()
    assert lengths == [[1], [2], [3], [4]]
    assert checked == [["text"]] * 4  # once per request; neither the run nor a batch re-checks
