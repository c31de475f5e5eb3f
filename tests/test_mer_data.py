"""The soundtracks dataset and mid-level annotations, on generated files in the real formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shared_data
from mer_fixtures import make_midlevel, make_soundtracks

from xairobust.data.base import get_dataset
from xairobust.data.midlevel import load_midlevel
from xairobust.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def mer_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("merdata")
    make_soundtracks(root, n=20, seconds=0.6)
    return root


@pytest.fixture
def kw(mer_root):
    return {"cache_dir": str(mer_root / "cache")}


def test_shapes_targets_and_random_split(mer_root, kw):
    splits = {s: get_dataset("soundtracks", s, mer_root, **kw) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 16, "val": 2, "test": 2}
    numbers = [set(d.extras["number"].tolist()) for d in splits.values()]
    assert set.union(*numbers) == set(range(1, 21)) and sum(map(len, numbers)) == 20
    # the split is torch.randperm(20, seed 42): train first, then val, then test
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(42)).tolist()
    assert numbers[2] == {i + 1 for i in perm[18:]}
    d = splits["test"]
    assert tuple(d.x.shape) == (2, 1, 313, 149) and d.x.dtype == torch.float32
    assert d.info.input_shape == (1, 313, 149) and d.info.value_range is None and d.info.num_outputs == 8
    # targets are the CSV ratings / 10, in EMOTIONS order (the file starts with a BOM)
    csv = (mer_root / "mer-soundtracks" / "mean_ratings_set1.csv").read_text(encoding="utf-8-sig").splitlines()
    rows = {int(line.split(",")[0]): [float(v) / 10 for v in line.split(",")[1:9]] for line in csv[1:]}
    for n, y in zip(d.extras["number"].tolist(), d.y.tolist(), strict=True):
        np.testing.assert_allclose(y, rows[n], rtol=1e-6)


def test_standardised_with_training_statistics_only(mer_root, kw):
    train = get_dataset("soundtracks", "train", mer_root, **kw).x.double()
    assert abs(float(train.mean())) < 1e-6
    assert float(train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    test = get_dataset("soundtracks", "test", mer_root, **kw).x.double()
    assert abs(float(test.mean())) > 1e-4  # the test split is *not* re-standardised


def test_named_split_reads_its_json(mer_root, kw):
    test = get_dataset("soundtracks", "test", mer_root, named_split="fixed", **kw)
    assert test.extras["number"].tolist() == [19, 20]
    val = get_dataset("soundtracks", "val", mer_root, named_split="fixed", **kw)
    assert val.extras["number"].tolist() == [17, 18]


def test_bad_options_and_missing_data_are_one_line_errors(mer_root, tmp_path, kw):
    with pytest.raises(DataError, match="split_nope.json"):
        get_dataset("soundtracks", "train", mer_root, named_split="nope", **kw)
    with pytest.raises(ConfigError, match="Did you mean 'split_seed'"):
        get_dataset("soundtracks", "train", mer_root, split_sed=1, **kw)
    with pytest.raises(DataError, match="Soundtracks not found.*mer-soundtracks"):
        get_dataset("soundtracks", "train", tmp_path, **kw)


def test_excerpts_are_fixed_per_file_and_seed(mer_root, kw):
    a = get_dataset("soundtracks", "test", mer_root, **kw).x
    b = get_dataset("soundtracks", "test", mer_root, **kw).x
    assert torch.equal(a, b)
    start = get_dataset("soundtracks", "test", mer_root, excerpt="start", **kw).x
    assert tuple(start.shape) == (2, 1, 313, 149)


def test_excerpt_offsets_and_repetition():
    from xairobust.data.soundtracks import SoundtracksOptions, excerpt

    spec = np.arange(400 * 2, dtype=np.float32).reshape(400, 2)
    opts = SoundtracksOptions(excerpt="middle")
    np.testing.assert_array_equal(excerpt(spec, 1, opts), spec[43:356])
    short = spec[:100]
    rep = excerpt(short, 1, SoundtracksOptions(excerpt="start"))
    np.testing.assert_array_equal(rep[:100], short)
    np.testing.assert_array_equal(rep[100:200], short)  # shorter files are repeated to 313 frames
    r1 = excerpt(spec, 7, SoundtracksOptions())
    r2 = excerpt(spec, 7, SoundtracksOptions())
    np.testing.assert_array_equal(r1, r2)


def test_midlevel_joined_by_id_not_row_order(tmp_path):
    expected = make_midlevel(tmp_path, [3, 1, 2])
    table = load_midlevel(tmp_path)
    assert sorted(table) == [1, 2, 3]
    for n, v in expected.items():
        np.testing.assert_allclose(table[n], v)


def test_midlevel_extras_for_a2m2e(mer_root, kw):
    expected = make_midlevel(mer_root / "midlevel", list(range(1, 21)))
    d = get_dataset("soundtracks", "train", mer_root, midlevel=True, **kw)
    assert tuple(d.extras["midlevel"].shape) == (16, 7)
    for n, row in zip(d.extras["number"].tolist(), d.extras["midlevel"], strict=True):
        np.testing.assert_allclose(row.numpy(), expected[n])


def test_missing_midlevel_files_say_what_to_do(mer_root, tmp_path, kw):
    with pytest.raises(DataError, match="mid-level annotations not found.*metadata.csv.*A2M2E"):
        get_dataset("soundtracks", "train", mer_root, midlevel=True, midlevel_dir=str(tmp_path), **kw)
    make_midlevel(tmp_path, list(range(1, 11)))  # only half of the excerpts annotated
    train = get_dataset("soundtracks", "train", mer_root, **kw).extras["number"].tolist()
    lacking = sum(n > 10 for n in train)
    with pytest.raises(DataError, match=f"lack {lacking} of the 16"):
        get_dataset("soundtracks", "train", mer_root, midlevel=True, midlevel_dir=str(tmp_path), **kw)


def test_midlevel_bad_columns(tmp_path):
    make_midlevel(tmp_path, [1])
    (tmp_path / "annotations.csv").write_text("song_id,melodiousness\n1,3\n")
    with pytest.raises(DataError, match="missing column"):
        load_midlevel(tmp_path)


@pytest.mark.data
def test_seed_split_equals_the_reference_split_file():
    folder = shared_data("mer-soundtracks")
    from xairobust.data.soundtracks import SoundtracksOptions, read_ratings, split_numbers

    numbers = list(read_ratings(folder).index)
    seeded = split_numbers(folder, numbers, SoundtracksOptions(split_seed=42))
    named = split_numbers(folder, numbers, SoundtracksOptions(named_split="seed42"))
    assert seeded == named
    raw = json.loads((folder / "split_seed42.json").read_text())
    assert [len(raw[k]) for k in ("train", "valid", "test")] == [288, 36, 36]
