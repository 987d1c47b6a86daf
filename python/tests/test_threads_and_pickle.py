"""One model shared by threads, and a model sent by pickle, as Ray sends it."""

from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import vitmsn
from conftest import BARE_MODEL, CLASSIFIER, SAMPLES


def test_four_threads_on_one_model_get_the_single_thread_answers_bit_for_bit():
    model = vitmsn.ViTMSN(BARE_MODEL)
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal((b, 3, 32, 32), dtype=np.float32) for b in (1, 2, 3, 4)]
    alone = [model.forward(b, output_hidden_states=True) for b in batches]

    def run(index):
        return [model.forward(batches[index], output_hidden_states=True) for _ in range(5)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(run, range(4)))
    for expected, repeats in zip(alone, together):
        for out in repeats:
            np.testing.assert_array_equal(out["last_hidden_state"], expected["last_hidden_state"])
            for ours, theirs in zip(out["hidden_states"], expected["hidden_states"]):
                np.testing.assert_array_equal(ours, theirs)


def test_threads_default_to_the_cores_this_process_may_use():
    model = vitmsn.ViTMSN(BARE_MODEL)
    if "VITMSN_THREADS" not in os.environ:
        assert model.threads == len(os.sched_getaffinity(0))
    assert vitmsn.ViTMSN(BARE_MODEL, threads=1).threads == 1
    assert vitmsn.ViTMSN(BARE_MODEL, backend="scalar").threads == 1


def test_pickle_round_trip_loads_the_same_checkpoint_with_the_same_options():
    model = vitmsn.ViTMSN(CLASSIFIER, backend="scalar")
    copy = pickle.loads(pickle.dumps(model))
    assert (copy.path, copy.backend) == (model.path, "scalar")
    image = [SAMPLES / "query/cat/cat-1.jpg"]
    assert copy.classify(image, top_k=3) == model.classify(image, top_k=3)
    # A thread count or precision left to the default stays the receiver's default; a
    # given one travels.
    default = pickle.loads(pickle.dumps(vitmsn.ViTMSN(BARE_MODEL)))
    assert default._threads is None and default._precision is None
    assert pickle.loads(pickle.dumps(vitmsn.ViTMSN(BARE_MODEL, threads=1))).threads == 1
    bf16 = vitmsn.ViTMSN(BARE_MODEL, precision="bf16")
    assert pickle.loads(pickle.dumps(bf16)).precision == "bf16"


def test_version():
    assert vitmsn.__version__.count(".") == 2
