"""bwe.metadata: the typed metadata.json schema reads and writes the bundled files unchanged, and refuses
a wrong version, a missing key or a mistyped one by naming the key and the file."""

import copy
import json
import os
import re

import pytest

from bwe.metadata import FORMAT_VERSION, MetadataError, ModelMetadata, StateTensor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLES = [os.path.join(REPO, "bwe", "pretrained", "metadata.json"),
           os.path.join(REPO, "bwe", "pretrained", "offline", "metadata.json")]


def _load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def bundled():
    return _load_json(BUNDLES[0])


@pytest.mark.parametrize("path", BUNDLES, ids=["streaming", "offline"])
def test_bundles_round_trip_unchanged(path, tmp_path):
    data = _load_json(path)
    metadata = ModelMetadata.from_dict(data, path)
    assert metadata.to_dict() == data
    assert list(metadata.to_dict()) == list(data)  # the keys in the file's order too
    metadata.write(tmp_path / "metadata.json")
    assert _load_json(tmp_path / "metadata.json") == data
    assert ModelMetadata.load(tmp_path / "metadata.json") == metadata


def test_fields_are_typed(bundled):
    metadata = ModelMetadata.from_dict(bundled)
    assert metadata.format_version == FORMAT_VERSION
    assert isinstance(metadata.states[0], StateTensor) and isinstance(metadata.states[0].shape, tuple)
    assert metadata.files["block"].frames_per_call == bundled["files"]["block"]["frames_per_call"]
    assert metadata.files["streaming"].quantization is None  # a float file has no quantization key
    assert metadata.checks.int8_calibration.frames == bundled["checks"]["int8_calibration"]["frames"]
    uncalibrated = copy.deepcopy(bundled)
    uncalibrated["checks"]["int8_calibration"] = None  # a dynamic-range file's: null in the file, kept as null
    assert ModelMetadata.from_dict(uncalibrated).checks.int8_calibration is None


@pytest.mark.parametrize("version", [None, 2, "1", True])
def test_other_format_versions_are_refused(bundled, version):
    data = dict(bundled, format_version=version)
    with pytest.raises(MetadataError, match=rf"^model/metadata.json: format_version {version!r}, this bwe reads 1 "
                                            r"\(export the model again"):
        ModelMetadata.from_dict(data, "model/metadata.json")


@pytest.mark.parametrize("remove, named", [
    (lambda d: d.pop("states"), "states"),
    (lambda d: d["files"]["block"].pop("signature"), "files.block.signature"),
    (lambda d: d["states"][2].pop("shape"), "states[2].shape"),
    (lambda d: d["checks"].pop("int8_calibration"), "checks.int8_calibration"),
])
def test_missing_keys_are_named(bundled, remove, named):
    data = copy.deepcopy(bundled)
    remove(data)
    with pytest.raises(MetadataError, match="^m/metadata.json: missing keys " + re.escape(f"['{named}']") + "$"):
        ModelMetadata.from_dict(data, "m/metadata.json")


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(delay_samples="64"), "delay_samples is '64', expected an integer"),
    (lambda d: d.update(causal=1), "causal is 1, expected true or false"),
    (lambda d: d.update(params=True), "params is True, expected an integer"),
    (lambda d: d.update(frame_ms="16"), "frame_ms is '16', expected a number"),
    (lambda d: d.update(states={}), r"states is \{\}, expected a list"),
    (lambda d: d["states"][1].update(shape=[1, 2.5, 1]), r"states\[1\].shape\[1\] is 2.5, expected an integer"),
    (lambda d: d["files"].update(block="block.tflite"), "files.block is 'block.tflite', expected an object"),
    (lambda d: d["checks"].update(int8_calibration=[]), r"checks.int8_calibration is \[\], expected an object"),
])
def test_mistyped_keys_are_named(bundled, change, message):
    data = copy.deepcopy(bundled)
    change(data)
    with pytest.raises(MetadataError, match=f"^m/metadata.json: {message}$"):
        ModelMetadata.from_dict(data, "m/metadata.json")


def test_keys_added_to_format_1_later_may_be_absent_and_unknown_keys_are_ignored(bundled):
    data = copy.deepcopy(bundled)
    for key in ("lookahead_ms", "highband_gain"):
        del data[key]
    del data["checks"]["int8_highband_snr_db_vs_float"]
    metadata = ModelMetadata.from_dict(dict(data, added_by_a_later_bwe=1))
    assert metadata.lookahead_ms is None and metadata.highband_gain is None
    assert metadata.to_dict() == data  # absent stays absent


def test_unreadable_files_are_named(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text("{not json")
    with pytest.raises(MetadataError, match=rf"^{path}: unreadable \("):
        ModelMetadata.load(path)
    path.write_text("[1, 2]")
    with pytest.raises(MetadataError, match=rf"^{path}: holds \[1, 2\], expected a JSON object"):
        ModelMetadata.load(path)
    with pytest.raises(MetadataError, match="unreadable"):
        ModelMetadata.load(tmp_path / "missing.json")
