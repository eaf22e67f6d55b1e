"""The ``train`` workload on Annex A's CIFAR-10 case, read from a directory in the real python format.

The directory is generated here exactly as the published files are (pickled
dicts, ``b'data'`` uint8 N×3072, ``b'labels'``, ``batches.meta``), with
images that are trivially separable (class k lights a band of rows of its
own), so the ResNet-8 reaches a param-given target in a few CPU epochs. A
missing or malformed file is an invalid invocation naming the file. A local
evaluation hands the workload the spec's ``trainingCase`` hostPath.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cardeval.api.models import DatasetVolume, TrainingCase
from cardeval.engine.catalog import Topology
from cardeval.engine.local_executor import LocalExecutor
from cardeval.engine.planner import WorkItem
from cardeval_workloads.envelope import parse_envelope
from cardeval_workloads.harness import cli
from cardeval_workloads.suite import _cifar, _training

PER_CLASS_PER_BATCH = 4


def _images(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise, plus a bright band of three rows at row 3·class in every channel."""
    images = rng.integers(0, 60, size=(len(classes), 3, 32, 32), dtype=np.uint8)
    for i, k in enumerate(classes):
        images[i, :, 3 * k:3 * k + 3, :] = 250
    return images.reshape(len(classes), -1)


def _write(path, data: np.ndarray, labels: list[int]) -> None:
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": path.name.encode(), b"labels": labels, b"data": data,
                     b"filenames": [b"img%d.png" % i for i in range(len(labels))]}, f)


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.default_rng(0)
    for name in (*_cifar.TRAIN_FILES, _cifar.TEST_FILE):
        labels = np.repeat(np.arange(10), PER_CLASS_PER_BATCH if name != _cifar.TEST_FILE else 2)
        rng.shuffle(labels)
        _write(tmp_path / name, _images(labels, rng), [int(v) for v in labels])
    with open(tmp_path / _cifar.META_FILE, "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % k for k in range(10)], b"num_vis": 3072,
                     b"num_cases_per_batch": 40}, f)
    return tmp_path


def _run(*params: str):
    args = ["train", "--profile", "quick", "--device", "cpu", "--param", "threads=1"]
    for p in params:
        args += ["--param", p]
    envelope, code = cli.run(args)
    return parse_envelope(envelope.to_json()), code


def test_the_reader_gives_the_standard_split_in_torch_layout(cifar_dir):
    case = _training.cifar10(str(cifar_dir))
    assert tuple(case.x_train.shape) == (200, 3, 32, 32) and tuple(case.x_val.shape) == (20, 3, 32, 32)
    assert float(case.x_train.max()) <= 1.0 and case.y_train.bincount().tolist() == [20] * 10
    # row-major R, G, B planes: the band of image 0's class sits in rows 3k..3k+2 of every channel
    k = int(case.y_val[0])
    assert float(case.x_val[0, :, 3 * k:3 * k + 3].min()) == pytest.approx(250 / 255)
    assert (case.target, case.target_source) == (0.9362, "T/ISC 0056-2024 A.3, ResNet-50 on CIFAR-10")


@pytest.mark.slow
def test_the_resnet_trains_to_a_param_target_and_reports_the_case(cifar_dir):
    env, code = _run("dataset=cifar10", f"dataset_dir={cifar_dir}", "target=0.9", "runs=1", "max_epochs=15")
    assert code == 0 and env.status == "ok", env.errors
    for name in ("train.fp32.completed", "train.fp32.reached_target", "train.amp.completed",
                 "train.amp.reached_target", "checkpoint.restored"):
        (found,) = env.checks_named(name)
        assert found.ok is True, (name, found.detail)
    (completed,) = env.checks_named("train.fp32.completed")
    assert f"ResNet-8 (plain torch, 32x32x3, 10 classes) on CIFAR-10 from {cifar_dir}" in completed.detail
    assert "200 train / 20 validation, the standard split (data_batch_1-5 / test_batch)" in completed.detail
    assert "target 0.9 (--param target)" in completed.detail
    (reached,) = env.checks_named("train.fp32.reached_target")
    assert reached.expected == 0.9 and reached.observed >= 0.9 and " epochs (" in reached.detail
    epochs = env.metrics_named("train.epochs")
    assert len(epochs) == 2 and all(1 <= m.value <= 15 for m in epochs)


def test_the_default_target_is_the_standards(cifar_dir):
    case = _training.cifar10(str(cifar_dir))
    assert _training.target_of({"target": None}, case) == (0.9362, "T/ISC 0056-2024 A.3, ResNet-50 on CIFAR-10")
    assert _training.target_of({"target": 0.5}, case) == (0.5, "--param target")


def _invalid(*params: str) -> str:
    env, code = _run(*params)
    assert code == 2 and env.status != "ok" and not env.checks_named("train.fp32.reached_target")
    return " ".join(env.errors)


def test_a_missing_file_is_an_invalid_invocation_naming_it(cifar_dir):
    (cifar_dir / "data_batch_3").unlink()
    error = _invalid("dataset=cifar10", f"dataset_dir={cifar_dir}")
    assert "--param dataset_dir" in error and "data_batch_3 is missing" in error


def test_a_malformed_file_is_an_invalid_invocation_naming_it(cifar_dir):
    (cifar_dir / _cifar.TEST_FILE).write_bytes(b"not a pickle")
    error = _invalid("dataset=cifar10", f"dataset_dir={cifar_dir}")
    assert "--param dataset_dir" in error and "test_batch is not a CIFAR-10 python pickle" in error


def test_data_of_the_wrong_shape_is_an_invalid_invocation_naming_the_file(cifar_dir):
    _write(cifar_dir / "data_batch_1", np.zeros((4, 1024), dtype=np.uint8), [0, 1, 2, 3])
    error = _invalid("dataset=cifar10", f"dataset_dir={cifar_dir}")
    assert "data_batch_1 b'data' is not uint8" in error and "(4, 1024)" in error


def test_labels_out_of_range_and_a_missing_directory_are_invalid(cifar_dir, tmp_path):
    _write(cifar_dir / "data_batch_2", np.zeros((2, 3072), dtype=np.uint8), [0, 10])
    assert "data_batch_2 has labels outside 0" in _invalid("dataset=cifar10", f"dataset_dir={cifar_dir}")
    assert "not a directory" in _invalid("dataset=cifar10", f"dataset_dir={tmp_path / 'absent'}")


def test_cifar10_needs_a_directory_and_digits_takes_none(cifar_dir):
    assert "needs --param dataset_dir" in _invalid("dataset=cifar10")
    assert "only read with --param dataset=cifar10" in _invalid(f"dataset_dir={cifar_dir}")


def test_a_local_evaluation_reads_the_case_from_its_host_path(cifar_dir):
    """The executor gives the train run the spec's hostPath; the run trains the ResNet on it."""
    case = TrainingCase(dataset="cifar10", volume=DatasetVolume(host_path=str(cifar_dir)))
    item = WorkItem(name="t-train", node="local", workload="train", topology=Topology.CARD, cards=1,
                    clauses=("6.2.1.c",), profile="quick", timeout_s=300,
                    params=(("dataset", "cifar10"), ("max_epochs", "1"), ("runs", "1"), ("target", "0.05"),
                            ("threads", "1")))
    run = LocalExecutor(device="cpu", case=case).run(item)
    assert run.usable, run.failure()
    (completed,) = run.envelope.checks_named("train.fp32.completed")
    assert f"on CIFAR-10 from {cifar_dir}" in completed.detail and "200 train / 20 validation" in completed.detail
