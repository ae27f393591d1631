"""bwe.data.datasets: file listings of folder, LibriSpeech and VCTK layouts, screening, held-out speakers."""

import os

import pytest

from bwe.config import RecipeError, recipe_from_dict
from bwe.data.datasets import (
    VCTK_TEST_SPEAKERS,
    DatasetError,
    dataset_files,
    find_vctk_audio_dir,
    librispeech_files,
    screen_files,
    vctk_files,
    vctk_speaker_of,
)
from tiny_corpora import librispeech_members, vctk092_members, write_garbage, write_tree, write_wav


def data_cfg(**values):
    return recipe_from_dict({"data": values}).data


def test_folder_listing_is_recursive_sorted_and_screens_bad_and_short_files(tmp_path):
    good = [write_wav(str(tmp_path / "b" / "deep" / "x.wav"), 0.8, seed=1), write_wav(str(tmp_path / "a.wav"), 1.2)]
    short = write_wav(str(tmp_path / "short.wav"), 0.2, seed=2)
    corrupt = write_garbage(str(tmp_path / "corrupt.flac"))
    empty = str(tmp_path / "empty.wav")
    open(empty, "wb").close()
    write_wav(str(tmp_path / ".hidden" / "h.wav"), 1.0)  # hidden folders are not part of the corpus
    (tmp_path / "notes.txt").write_text("not audio")

    listing = dataset_files(data_cfg(kind="folder", train_dir=str(tmp_path), min_seconds=0.5), "train")

    assert listing.files == sorted(good)
    assert listing.seconds == pytest.approx(2.0, abs=1e-3)
    assert set(listing.skipped) == {short, corrupt, empty}
    assert "too short" in listing.skipped[short]
    assert "unreadable" in listing.skipped[corrupt]
    assert "skipped 3" in listing.summary()


def test_folder_without_valid_dir_has_no_validation_files(tmp_path):
    write_wav(str(tmp_path / "a.wav"), 1.0)
    assert dataset_files(data_cfg(train_dir=str(tmp_path)), "valid").files == []


def test_missing_or_empty_folders_fail_with_the_key(tmp_path):
    with pytest.raises(DatasetError, match=r"data\.train_dir: .*no such directory"):
        dataset_files(data_cfg(train_dir=str(tmp_path / "nope")), "train")
    (tmp_path / "valid").mkdir()
    write_garbage(str(tmp_path / "valid" / "bad.wav"))
    with pytest.raises(DatasetError, match=r"data\.valid_dir: .*no usable audio.*1 skipped"):
        dataset_files(data_cfg(train_dir=str(tmp_path), valid_dir=str(tmp_path / "valid")), "valid")
    with pytest.raises(RecipeError, match=r"data\.valid_dir: .* is not a directory"):
        data_cfg(train_dir=str(tmp_path), valid_dir=str(tmp_path / "gone")).validate()
    with pytest.raises(RecipeError, match=r"data\.train_dir: not set"):
        data_cfg().validate()


def test_recipe_rejects_bad_data_values():
    with pytest.raises(RecipeError, match=r"data\.segment_samples: 1000 must be a positive multiple of 256"):
        data_cfg(segment_samples=1000)
    with pytest.raises(RecipeError, match=r"data\.kind"):
        data_cfg(kind="timit")
    with pytest.raises(RecipeError, match=r"data\.cutoff_hz_range"):
        data_cfg(cutoff_hz_range=[4000, 3000])
    with pytest.raises(RecipeError, match=r"data\.shuffle: unknown key"):
        data_cfg(shuffle=True)


def test_librispeech_layout_subsets_and_errors(tmp_path):
    write_tree(str(tmp_path), librispeech_members("dev-clean", utterances=2))
    write_tree(str(tmp_path), librispeech_members("train-clean-100", utterances=3))
    (tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123" / "stray.flac").write_bytes(b"")  # not an utterance name

    dev = librispeech_files(tmp_path, ["dev-clean"])
    assert [os.path.basename(f) for f in dev] == [
        "174-50561-0000.flac", "174-50561-0001.flac", "84-121123-0000.flac", "84-121123-0001.flac"]
    assert dev == librispeech_files(tmp_path / "LibriSpeech", ["dev-clean"])  # root may be LibriSpeech/ itself
    assert len(librispeech_files(tmp_path, ["dev-clean", "train-clean-100"])) == 7

    cfg = data_cfg(kind="librispeech", train_dir=str(tmp_path), min_seconds=0.1)
    assert len(dataset_files(cfg, "train").files) == 3  # default train subset: train-clean-100
    assert dataset_files(cfg, "valid").files == dev  # default valid subset: dev-clean, from train_dir

    with pytest.raises(DatasetError, match=r"test-clean.*missing.*--subsets test-clean --download"):
        librispeech_files(tmp_path, ["test-clean"])
    with pytest.raises(DatasetError, match="unknown LibriSpeech subset 'dev-clena'"):
        librispeech_files(tmp_path, ["dev-clena"])
    with pytest.raises(DatasetError, match="no LibriSpeech subset found"):
        librispeech_files(tmp_path / "LibriSpeech" / "dev-clean", ["dev-clean"])


def test_vctk_092_holds_out_the_standard_test_speakers(tmp_path):
    write_tree(str(tmp_path / "VCTK-Corpus-0.92"), vctk092_members(utterances=2))

    train = vctk_files(tmp_path, ["train"])
    test = vctk_files(tmp_path, ["test"])
    assert {vctk_speaker_of(f) for f in train} == {"p225", "p226"}
    assert {vctk_speaker_of(f) for f in test} == {"p360", "s5"}
    assert not {vctk_speaker_of(f) for f in train} & set(VCTK_TEST_SPEAKERS)
    assert all(f.endswith("_mic1.flac") for f in train + test) and len(train) == len(test) == 4
    assert all(f.endswith("_mic2.flac") for f in vctk_files(tmp_path, ["p225"], mic="mic2"))

    cfg = data_cfg(kind="vctk", train_dir=str(tmp_path), min_seconds=0.1)
    assert dataset_files(cfg, "train").files == train
    assert dataset_files(cfg, "valid").files == test
    with pytest.raises(DatasetError, match="'p999' is neither"):
        vctk_files(tmp_path, ["p999"])


def test_vctk_080_layout_and_092_preferred_when_both_exist(tmp_path):
    old = tmp_path / "VCTK-Corpus" / "wav48"
    for speaker in ("p225", "p361"):
        write_wav(str(old / speaker / f"{speaker}_001.wav"), 0.3, rate=48000)
    assert find_vctk_audio_dir(tmp_path) == (str(old), "wav48")
    assert [vctk_speaker_of(f) for f in vctk_files(tmp_path, ["train", "test"])] == ["p225", "p361"]
    assert [vctk_speaker_of(f) for f in vctk_files(tmp_path, ["test"])] == ["p361"]

    write_tree(str(tmp_path / "VCTK-Corpus-0.92"), vctk092_members(utterances=1))
    assert find_vctk_audio_dir(tmp_path)[1] == "wav48_silence_trimmed"
    with pytest.raises(DatasetError, match="no VCTK audio folder"):
        find_vctk_audio_dir(tmp_path / "VCTK-Corpus-0.92" / "txt")


def test_screen_reads_headers_of_other_rates(tmp_path):
    path = write_wav(str(tmp_path / "x.wav"), 0.75, rate=48000)
    listing = screen_files([path], min_seconds=0.7)
    assert listing.files == [path] and listing.seconds == pytest.approx(0.75)
    assert screen_files([path], min_seconds=0.8).files == []


def test_missing_data_errors_name_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def message(split_key="train", **values):
        with pytest.raises(RecipeError, match=rf"data\.{split_key}_dir: ") as e:
            data_cfg(**values).validate()
        return str(e.value)

    assert message(kind="librispeech", train_dir="data/librispeech") == (
        "data.train_dir: data/librispeech is not a directory — run python -m bwe.data.prepare librispeech"
        " --root data/librispeech --download")
    assert message(kind="librispeech", train_dir="data/ls", train_subsets=["train-clean-360"]).endswith(
        "--root data/ls --subsets train-clean-360 dev-clean --download")
    (tmp_path / "vctk").mkdir()
    assert message("valid", kind="vctk", train_dir="vctk", valid_dir="held out").endswith(
        "data.valid_dir: held out is not a directory — run python -m bwe.data.prepare vctk --root 'held out' --download")
    assert message(train_dir="corpus/train") == (
        "data.train_dir: corpus/train is not a directory — point it at a folder of speech audio, or build the"
        " real-speech corpus of the bundled models with python -m bwe.data.prepare debian-corpus --root corpus"
        " and use data.train_dir=corpus/train data.valid_dir=corpus/valid")
    assert "debian-corpus --root speech and use data.train_dir=speech/train" in message(train_dir="speech")
    assert "debian-corpus --root DIR" in message(train_dir="")

    with pytest.raises(DatasetError) as e:  # the listing, when validate() was not called first
        dataset_files(data_cfg(kind="vctk", train_dir="gone"), "train")
    assert str(e.value) == ("data.train_dir: gone: no such directory"
                            " — run python -m bwe.data.prepare vctk --root gone --download")
