"""Dataset loading: IDX parsing, CSV/NPZ parsing, splits, and the real datasets from a data folder."""

import codecs
import gzip
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from trainer import cli, report
from trainer.datasets import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DatasetError,
    grouped_holdout,
    idx_to_xy,
    load_dataset,
    read_idx,
    validation_split,
)

from skips import needs_root


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def images():
    return np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# IDX

@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_reads_idx_images_and_labels(tmp_path, images, compress):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write = gzip.compress if compress else bytes
    suffix = ".gz" if compress else ""
    (tmp_path / f"img{suffix}").write_bytes(write(idx_bytes(IDX_IMAGES_MAGIC, images)))
    (tmp_path / f"lab{suffix}").write_bytes(write(idx_bytes(IDX_LABELS_MAGIC, labels)))

    read_images = read_idx(tmp_path / f"img{suffix}", IDX_IMAGES_MAGIC)
    read_labels = read_idx(tmp_path / f"lab{suffix}", IDX_LABELS_MAGIC)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)

    x, y = idx_to_xy(read_images, read_labels, "img", "lab", n_classes=10)
    assert x.shape == (5, 784) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, images.reshape(5, 784) / 255.0, rtol=1e-6)
    assert y.dtype == np.int64 and y.tolist() == [3, 1, 4, 1, 5]


def test_gzip_detected_by_content_not_name(tmp_path, images):
    (tmp_path / "images.idx").write_bytes(gzip.compress(idx_bytes(IDX_IMAGES_MAGIC, images)))
    np.testing.assert_array_equal(read_idx(tmp_path / "images.idx", IDX_IMAGES_MAGIC), images)


def test_wrong_magic_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(IDX_LABELS_MAGIC, np.zeros(10, np.uint8))))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz: not an IDX image file: magic number 2049.*expected 2051"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_truncated_idx_is_refused(tmp_path, images):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(IDX_IMAGES_MAGIC, images)[:-100]))
    with pytest.raises(DatasetError, match=r"images.gz: truncated: the header declares 5 images of 28x28 \(3920 bytes\) but only 3820"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_trailing_bytes_are_refused(tmp_path, images):
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(IDX_IMAGES_MAGIC, images) + b"\x00" * 7)
    with pytest.raises(DatasetError, match="7 unexpected bytes after the 5 images"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_truncated_header_is_refused(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(IDX_IMAGES_MAGIC.to_bytes(4, "big") + b"\x00\x00")
    with pytest.raises(DatasetError, match="truncated header"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_truncated_gzip_stream_is_refused(tmp_path, images):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(IDX_IMAGES_MAGIC, images))[:-50])
    with pytest.raises(DatasetError, match="images.gz: truncated gzip data"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_label_count_must_match_image_count(images):
    with pytest.raises(DatasetError, match="lab.gz: holds 4 labels but img.gz holds 5 images"):
        idx_to_xy(images, np.zeros(4, np.uint8), "img.gz", "lab.gz", n_classes=10)


def test_labels_out_of_range_are_refused(images):
    with pytest.raises(DatasetError, match="label 12 at index 2 is outside 0-9"):
        idx_to_xy(images, np.array([0, 1, 12, 3, 4], np.uint8), "img", "lab", n_classes=10)


# --------------------------------------------------------------------------------------------
# Data folder checks (known datasets)

def test_data_dir_file_with_wrong_checksum_is_refused(tmp_path):
    (tmp_path / "winequality-red.csv").write_text('"alcohol";"quality"\n9.4;5\n')
    with pytest.raises(DatasetError, match=r"winequality-red.csv: checksum mismatch: expected SHA-256 4a402cf0"):
        load_dataset("wine-quality", data_dir=tmp_path)


def test_data_dir_of_the_other_image_dataset_is_named_as_such(tmp_path, datasets_dir):
    """MNIST and Fashion-MNIST name their files alike: the other's folder was told of a checksum mismatch, a
    corrupted file or one not published, when the file is the published one of the other dataset."""
    fashion = datasets_dir / "fashion-mnist"
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(fashion))}/train-images-idx3-ubyte.gz is fashion-mnist's "
                                           r"train-images-idx3-ubyte.gz, not mnist's: give the folder that holds the "
                                           r"mnist files \(--data-dir or \$SCRATCHNET_DATA_DIR\), or train on "
                                           r"fashion-mnist with --dataset fashion-mnist$"):
        load_dataset("mnist", data_dir=fashion)
    with gzip.open(datasets_dir / "mnist" / "train-images-idx3-ubyte.gz") as packed:  # unpacked, as Windows does
        (tmp_path / "train-images.idx3-ubyte").write_bytes(packed.read())
    with pytest.raises(DatasetError, match="train-images.idx3-ubyte is mnist's train-images-idx3-ubyte.gz, not "
                                           "fashion-mnist's"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_data_dir_wine_file_with_windows_line_ends_is_the_published_data(tmp_path, datasets_dir):
    published = (datasets_dir / "wine-quality" / "winequality-red.csv").read_bytes()
    (tmp_path / "winequality-red.csv").write_bytes(published.replace(b"\n", b"\r\n"))
    read = load_dataset("wine-quality", data_dir=tmp_path)
    expected = load_dataset("wine-quality", data_dir=datasets_dir)
    np.testing.assert_array_equal(read.x_train, expected.x_train)
    np.testing.assert_array_equal(read.y_test, expected.y_test)
    assert read.files == expected.files  # the published file's SHA-256: the data read is that file's

    # Another change (here the delimiter) is still refused, saying what to do.
    (tmp_path / "winequality-red.csv").write_bytes(published.replace(b";", b"\t"))
    with pytest.raises(DatasetError, match=r"is not the published wine-quality file: put the published file there, "
                                           r"or leave out --data-dir .* --dataset csv --data-path .*winequality-red"):
        load_dataset("wine-quality", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_data_dir_idx_files_named_as_windows_unpackers_name_them(tmp_path, datasets_dir, name):
    for kind in ("images-idx3", "labels-idx1"):  # t10k-images-idx3-ubyte.gz -> t10k-images.idx3-ubyte
        raw = gzip.decompress((datasets_dir / name / f"t10k-{kind}-ubyte.gz").read_bytes())
        (tmp_path / f"t10k-{kind.replace('-', '.')}-ubyte").write_bytes(raw)
    read = load_dataset(name, data_dir=tmp_path, test_only=True)
    expected = load_dataset(name, data_dir=datasets_dir, test_only=True)
    np.testing.assert_array_equal(read.x_test, expected.x_test)
    np.testing.assert_array_equal(read.y_test, expected.y_test)
    assert sorted(read.files) == ["t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"]


def test_data_dir_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"mnist: train-images-idx3-ubyte.gz not found in .*: put the published file "
                                           r"there \(gzip-compressed or not\), or leave out --data-dir"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(DatasetError, match=r"the data folder .*/typo \(--data-dir or \$SCRATCHNET_DATA_DIR\) is not a "
                                           "folder that exists: give the folder that holds the wine-quality files"):
        load_dataset("wine-quality", data_dir=tmp_path / "typo")


def test_data_dir_from_environment(tmp_path, monkeypatch, datasets_dir):
    shutil.copytree(datasets_dir / "wine-quality", tmp_path / "wine-quality")
    monkeypatch.setenv("SCRATCHNET_DATA_DIR", str(tmp_path))
    data = load_dataset("wine-quality", variant="white", cache_dir=tmp_path / "nothing-here", download=False)
    assert len(data.x_train) + len(data.x_test) == 4898
    # A variant, like a dataset's name, is read in any case.
    assert load_dataset("wine-quality", variant="White", download=False).variant == "white"


def test_no_download_and_empty_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("SCRATCHNET_DATA_DIR", raising=False)
    with pytest.raises(DatasetError, match="not in the cache"):
        load_dataset("fashion-mnist", cache_dir=tmp_path, download=False)


def test_unknown_names_and_variants():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar10'.*mnist, fashion-mnist, wine-quality"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="mnist has no variants"):
        load_dataset("mnist", variant="red")


# --------------------------------------------------------------------------------------------
# CSV

ROWS = [(1.0, 2.5, "cat"), (2.0, 3.5, "dog"), (3.0, 4.5, "cat"), (4.0, 5.5, "bird"), (5.0, 6.5, "dog")] * 4


def write_csv(path, rows, delimiter=",", header=("a", "b", "kind"), quote_header=False):
    name = (lambda h: f'"{h}"') if quote_header else str
    lines = [delimiter.join(name(h) for h in header)] + [delimiter.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_csv_delimiters(tmp_path, delimiter):
    path = write_csv(tmp_path / "pets.csv", ROWS, delimiter, quote_header=True)
    data = load_dataset("csv", path=path, target="kind", task="classification")
    assert data.name == "pets"
    assert data.labels == ["bird", "cat", "dog"]
    assert data.feature_names == ["a", "b"]
    assert len(data.x_train) + len(data.x_test) == len(ROWS)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.files == {"pets.csv": hashlib.sha256(path.read_bytes()).hexdigest()}
    # Loading again under the recorded name gives the same split.
    again = load_dataset(data.name, path=path, target="kind", task="classification")
    np.testing.assert_array_equal(again.x_test, data.x_test)
    # Each feature row maps to the class it was written with.
    kind_of = {(a, b): kind for a, b, kind in ROWS}
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert all(data.labels[c] == kind_of[tuple(row)] for row, c in zip(x.tolist(), y))


def test_csv_regression_with_test_file(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(1, 2, 0.5), (3, 4, 1.5)], header=("u", "v", "price"))
    test = write_csv(tmp_path / "test.csv", [(5, 6, 2.5)], header=("u", "v", "price"))
    data = load_dataset("csv", path=train, test_path=test, target="price", task="regression")
    assert data.target == "price" and data.labels is None
    np.testing.assert_array_equal(data.x_train, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(data.y_test, np.array([2.5], np.float32))
    assert data.y_train.dtype == np.float32
    assert data.split == "test file test.csv"


def test_csv_numeric_classes_sort_numerically(tmp_path):
    path = write_csv(tmp_path / "n.csv", [(i, i * 2, [10, 2, 1][i % 3]) for i in range(30)])
    data = load_dataset("csv", path=path, target="kind", task="classification")
    assert data.labels == ["1", "2", "10"]


def test_csv_missing_target_column(tmp_path):
    """A target the file lacks was told the columns, and not what to do with them."""
    path = write_csv(tmp_path / "pets.csv", ROWS)
    with pytest.raises(DatasetError, match=r"pets.csv: no column named 'species'; the columns are: a, b, kind: name "
                                           r"the column that holds the values to predict \(--target\)$"):
        load_dataset("csv", path=path, target="species", task="classification")


@pytest.mark.parametrize("target, meant", [("Kind", "kind"), ("kinds", "kind"), ("B", "b")])
def test_a_mistyped_target_column_is_told_the_column_meant(tmp_path, target, meant):
    """Among a wide file's columns the one meant was left to be found by eye, a difference of case too."""
    path = write_csv(tmp_path / "pets.csv", ROWS)
    with pytest.raises(DatasetError, match=rf"pets.csv: no column named '{target}' \(did you mean '{meant}'\?\); "
                                           "the columns are: a, b, kind$"):
        load_dataset("csv", path=path, target=target, task="classification")


def test_a_csv_that_cannot_be_read_says_why(tmp_path):
    """A missing file or a folder was "cannot read as UTF-8 text: [Errno 2] ...", then "cannot read: No such
    file or directory", which left what to give instead to be guessed; an npz given as a csv got a bare
    decoding error."""
    with pytest.raises(DatasetError, match=r"absent.csv: no such file: give the path of the csv file to read "
                                           r"\(--data-path\)$"):
        load_dataset("csv", path=tmp_path / "absent.csv", target="kind", task="classification")
    write_csv(tmp_path / "pets.csv", ROWS)
    with pytest.raises(DatasetError, match=r" is a folder \(it holds pets.csv\): give the path of the csv file to "
                                           r"read, not its folder \(--data-path\)$"):
        load_dataset("csv", path=tmp_path, target="kind", task="classification")
    np.savez(tmp_path / "arrays.npz", x=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(DatasetError, match=r"arrays.npz: cannot read as UTF-8 text: .* use --dataset npz\)$"):
        load_dataset("csv", path=tmp_path / "arrays.npz", target="y", task="regression")


def test_a_csv_saved_in_a_code_page_names_the_line_and_says_to_save_it_as_utf8(tmp_path):
    """A spreadsheet's csv in Windows-1252 was told Python's decoding error, a byte position and no way out."""
    path = tmp_path / "pets.csv"
    path.write_bytes(codecs.BOM_UTF8 + "a,b,kind\n1.0,2.0,cat\n3.0,1.0,caf\u00e9\n".encode("cp1252"))
    with pytest.raises(DatasetError, match=r"pets.csv, line 3: cannot read as UTF-8 text: byte 0xe9 is not UTF-8 "
                                           r"\(.*\): save the file as UTF-8 \('CSV UTF-8' in Excel\)$"):
        load_dataset("csv", path=path, target="kind", task="classification")


def test_csv_non_numeric_feature_names_row_and_column(tmp_path):
    rows = list(ROWS)
    rows[3] = (4.0, "4.0.1", "bird")
    path = write_csv(tmp_path / "pets.csv", rows)
    with pytest.raises(DatasetError, match=r"pets.csv, line 5, column 'b': '4.0.1' is not a number"):
        load_dataset("csv", path=path, target="kind", task="classification")


def test_csv_fractional_targets_are_not_classes(tmp_path):
    """Each distinct value became a class of its own, where the same targets in an npz are refused."""
    path = tmp_path / "prices.csv"
    path.write_text("a,b,price\n" + "".join(f"{i},{i * 2},{i * 1.25}\n" for i in range(40)))
    with pytest.raises(DatasetError, match=r"prices.csv, line 3, column 'price': '1.25' is not a whole number, so "
                                           r"not a class: a measured quantity is predicted with --task regression$"):
        load_dataset("csv", path=path, target="price", task="classification")
    assert load_dataset("csv", path=path, target="price", task="regression").task == "regression"


@pytest.mark.parametrize("cell", ["", "NA", "NaN", "?", "null"])
def test_csv_missing_feature_value_says_how_to_fix_it(tmp_path, cell):
    """A spreadsheet's empty cell, pandas' NaN or R's NA in a feature: what it is and what to do."""
    rows = list(ROWS)
    rows[3] = (4.0, cell, "bird")
    path = write_csv(tmp_path / "pets.csv", rows)
    with pytest.raises(DatasetError, match=rf"pets.csv, line 5, column 'b': '{re.escape(cell)}' is a missing value: "
                                           "every feature needs one; fill in the missing values or drop those rows$"):
        load_dataset("csv", path=path, target="kind", task="classification")


def test_csv_text_feature_says_how_to_fix_it(tmp_path):
    path = tmp_path / "pets.csv"
    path.write_text("a,colour,kind\n" + "".join(f'{i},"red, dark",{"cat" if i % 2 else "dog"}\n' for i in range(10)))
    with pytest.raises(DatasetError, match=r"pets.csv, line 2, column 'colour': 'red, dark' is not a number: every "
                                           r"column but the target is a numeric feature; encode categories as numbers "
                                           r"\(one 0/1 column per category\) or drop the column$"):
        load_dataset("csv", path=path, target="kind", task="classification")


def test_csv_non_finite_and_non_numeric_target(tmp_path):
    path = write_csv(tmp_path / "r.csv", [(1, 2, 3), (1, "inf", 3)], header=("a", "b", "y"))
    with pytest.raises(DatasetError, match=r"line 3, column 'b': 'inf' is not finite"):
        load_dataset("csv", path=path, target="y", task="regression")
    path = write_csv(tmp_path / "r.csv", [(1, 2, 3), (1, 2, "high")], header=("a", "b", "y"))
    with pytest.raises(DatasetError, match=r"line 3, column 'y': 'high' is not a finite number"):
        load_dataset("csv", path=path, target="y", task="regression")


@pytest.mark.parametrize("task, cell, message", [
    ("regression", "high", r"'high' is not a finite number; class names are trained with --task classification$"),
    ("regression", "", r"'' is a missing target: every row needs one; fill in the missing targets or drop those rows$"),
    ("regression", "NA", r"'NA' is a missing target: every row needs one"),
    ("regression", '"0,5"', r"'0,5' is a number written with a decimal comma: write it with a point"),
    ("classification", "", r"the class is missing: every row needs one; fill in the missing classes or drop those "
                           r"rows$"),
])
def test_a_target_cell_that_cannot_be_trained_on_says_how_to_fix_it(tmp_path, task, cell, message):
    """A learner's CSV with a gap in its last column, or class names trained as a regression, is told
    what to change, not only which cell it is."""
    path = write_csv(tmp_path / "r.csv", [(1, 2, 3), (2, 1, 4), (1, 1, cell)], header=("a", "b", "y"))
    with pytest.raises(DatasetError, match=r"r.csv, line 4, column 'y': " + message):
        load_dataset("csv", path=path, target="y", task=task)


def test_csv_values_beyond_float32_are_named_not_trained_on_as_infinity(tmp_path):
    # Finite in float64, infinite once cast to the network's float32: a run published RMSE inf.
    path = write_csv(tmp_path / "r.csv", [(i, i % 7, i * 0.5) for i in range(20)] + [(1, 2, "1e39")],
                     header=("a", "b", "y"))
    with pytest.raises(DatasetError, match=r"line 22, column 'y': '1e39' is beyond float32's range"):
        load_dataset("csv", path=path, target="y", task="regression")
    path = write_csv(tmp_path / "f.csv", [(i, i % 7, i % 2) for i in range(20)] + [("-1e39", 2, 1)])
    with pytest.raises(DatasetError, match=r"line 22, column 'a': '-1e39' is beyond float32's range"):
        load_dataset("csv", path=path, target="kind", task="classification")
    np.savez(tmp_path / "big.npz", x=np.array([[1.0, 2.0]] * 9 + [[1e39, 0.0]]), y=np.arange(10) % 2)
    with pytest.raises(DatasetError, match=r"big.npz: x\[9, 0\] is 1e\+39, beyond float32's range"):
        load_dataset("npz", path=tmp_path / "big.npz")


def test_an_npz_of_regression_targets_with_no_rows_names_the_counts(tmp_path):
    """An empty target array was NumPy's 'zero-size array to reduction operation minimum which has no
    identity', from the check for columns float32 erases, where the loader names the counts that differ."""
    x = np.random.default_rng(0).random((50, 3))
    np.savez(tmp_path / "one.npz", x=x, y=np.zeros(0))
    with pytest.raises(DatasetError, match=r"one.npz: 50 feature rows but 0 targets$"):
        load_dataset("npz", path=tmp_path / "one.npz", task="regression")
    np.savez(tmp_path / "split.npz", x_train=x, y_train=x[:, 0], x_test=x[:5], y_test=np.zeros(0))
    with pytest.raises(DatasetError, match=r"split.npz: 5 test feature rows but 0 test targets$"):
        load_dataset("npz", path=tmp_path / "split.npz", task="regression")


def test_a_wide_csv_loads_whatever_the_csv_modules_field_limit(tmp_path):
    # 20,000 columns: read with a delimiter that is not its own, a line is one 140 kB field, over the
    # csv module's limit, which raised outside the reader's own error handling (a traceback).
    header = [f"g{j}" for j in range(20_000)] + ["kind"]
    path = write_csv(tmp_path / "wide.csv", [[i / 4] * 20_000 + [i % 2] for i in range(12)], header=header)
    data = load_dataset("csv", path=path, target="kind", task="classification")
    assert data.n_features == 20_000


def test_a_csv_with_classic_mac_line_ends_loads_as_with_any_other(tmp_path):
    path = write_csv(tmp_path / "pets.csv", ROWS)
    mac = tmp_path / "mac.csv"
    mac.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    plain, classic = (load_dataset("csv", path=p, target="kind", task="classification") for p in (path, mac))
    np.testing.assert_array_equal(plain.x_train, classic.x_train)


def test_a_group_of_copies_larger_than_the_share_stays_on_the_training_side():
    # 70 copies of one row among 100: taken whole, they made the test split 85 % of the rows.
    x = np.array([[i + 1, i * 7 % 5] for i in range(30)] + [[0, 0]] * 70, dtype=np.float32)
    for seed in range(5):
        train, test = grouped_holdout(x, 0.2, seed)
        assert len(test) == 20 and not (x[test] == 0).all(axis=1).any()
    train, test = grouped_holdout(np.array([[1, 1]] + [[0, 0]] * 19), 0.2, 0)
    assert test.tolist() == [0]  # the one row that can go: short of the share, not 19 of 20 rows
    with pytest.raises(DatasetError, match=r"about 4 of the 20 rows: .* 20 of them are one row"):
        grouped_holdout(np.zeros((20, 2)), 0.2, 0)


def test_csv_ragged_row(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("a;b;y\n1;2;3\n4;5;6\n7;8\n9;10;11\n")
    with pytest.raises(DatasetError, match="ragged.csv, line 4: 2 fields, but the header has 3"):
        load_dataset("csv", path=path, target="y", task="regression")


@pytest.mark.parametrize("text, message", [
    ("a,b,kind\n1.0,2.0,cat,\n3.0,1.0,dog,\n",
     r"line 2: 4 fields, but the header has 3: its last field is empty, after a delimiter ending the line: remove "
     r"the delimiter at the end of the lines$"),
    ("\n# measured in May\na;b;kind\n1.0;2.0;cat\n3.0;1.0;dog\n",
     r"line 3: 3 fields, but the header has 1, line 2, '# measured in May', which holds no ';': the first line "
     r"that is not blank is the header naming the columns: remove the lines above it$"),
])
def test_csv_ragged_rows_say_what_the_file_most_likely_holds(tmp_path, text, message):
    """Two files people make were told only "line 2: 4 fields, but the header has 3": every data line ending
    with a delimiter (the header without one), and a line above the header (a title, a comment), which was
    read as a header of one column, so the message named a count that the header the user sees does not have;
    with ';' between the fields, such a file was said to hold no ',' ';' or tab at all."""
    path = tmp_path / "data.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=f"data.csv, {message}"):
        load_dataset("csv", path=path, target="kind", task="classification")


@pytest.mark.parametrize("sep_line", ["sep=;\r\n", "SEP=;\n"])
def test_csv_first_line_naming_the_delimiter_as_excel_writes_it(tmp_path, sep_line):
    """Excel writes, and reads, a first line "sep=;" naming the delimiter; it was read as the header, of two
    columns ('sep=' and ''), and the file refused with "line 2: 3 fields, but the header has 2"."""
    path = tmp_path / "excel.csv"
    path.write_bytes(f"{sep_line}a;b;kind\r\n1.0;2.0;cat\r\n3.0;1.0;dog\r\n1.5;2.5;cat\r\n".encode("utf-8-sig"))
    dataset = load_dataset("csv", path=path, target="kind", task="classification", test_fraction=None)
    assert dataset.feature_names == ["a", "b"] and dataset.labels == ["cat", "dog"]
    assert dataset.x_test.tolist() == [[1.0, 2.0], [3.0, 1.0], [1.5, 2.5]]
    path.write_text(f"{sep_line}a;b;kind\n1.0;2.0;cat\n3.0;NA;dog\n")  # lines are counted from the sep line
    with pytest.raises(DatasetError, match=r"excel.csv, line 4, column 'b': 'NA' is a missing value"):
        load_dataset("csv", path=path, target="kind", task="classification")


def test_a_csv_quote_left_open_is_named_on_the_line_that_opens_it(tmp_path):
    """An unclosed quote takes every line after it into one field: the error points at the quote, not
    at the file's last line, which is well formed."""
    path = tmp_path / "quote.csv"
    path.write_text('a,b,y\n1,2,0\n\n3,4,1\n"5,6,0\n7,8,1\n1,2,0\n')
    with pytest.raises(DatasetError, match="quote.csv, line 5: a quoted field opened on this line runs on to line 7, "
                                           "taking the lines between into one field: close its quote"):
        load_dataset("csv", path=path, target="y", task="regression")
    path.write_text('a,b,y\n1,"two\nlines",0\n3,4,1\n')  # a closed quote may hold a line break
    assert load_dataset("csv", path=path, target="b", task="classification").labels == ["4", "two\nlines"]


def test_a_csv_column_without_a_name_is_refused_not_trained_on(tmp_path):
    """pandas' to_csv writes the row index as a first column with an empty name, which was trained on as a
    feature (the model then took one value more, the row's number); a delimiter ending every line was told
    as a missing value in column ''. Both name the column and the way out."""
    path = tmp_path / "indexed.csv"
    path.write_text(",a,b,kind\n0,1.0,2.0,cat\n1,3.0,1.0,dog\n2,1.5,2.5,cat\n3,3.5,0.5,dog\n")
    with pytest.raises(DatasetError, match=r"indexed.csv, line 1: column 1 of the header has no name: name it, or "
                                           r"drop the column .* unless given index=False\)$"):
        load_dataset("csv", path=path, target="kind", task="classification")
    path = tmp_path / "trailing.csv"
    path.write_text("\n\na,b,kind,\n1.0,2.0,cat,\n3.0,1.0,dog,\n")
    with pytest.raises(DatasetError, match=r"trailing.csv, line 3: column 4 of the header has no name"):
        load_dataset("csv", path=path, target="kind", task="classification")


@pytest.mark.parametrize("name, text, message", [
    # The first row of a headerless csv was taken for its header, and the error listed its values as the
    # columns, with no word of the missing header row, as when every value of that row is a number.
    ("iris.csv", "5.1,3.5,1.4,0.2,setosa\n7.0,3.2,4.7,1.4,versicolor\n",
     r"iris.csv: no column named 'species'; the columns are: 5.1, 3.5, 1.4, 0.2, setosa: names read off the first "
     r"row, which holds numbers; if it is data, add a header row naming the columns above it$"),
    # A file separated by spaces (as many .data files are) or '|' read as one column, and the error listed
    # its whole header as that column's name, with no word of the separator.
    ("iris.data", "sepal_length sepal_width species\n5.1 3.5 setosa\n7.0 3.2 versicolor\n",
     r"iris.data: no column named 'species'; the file reads as one column, 'sepal_length sepal_width species', as "
     r"its header holds no ',' ';' or tab: separate the fields with one of those$"),
    # A file of one column ('id') given with a target it lacks was told that its header holds no ',' ';' or
    # tab and to separate the fields with one of those, though it has one field: it is told its column.
    ("ids.csv", "id\n1\n2\n3\n", r"ids.csv: no column named 'species'; the columns are: id: name the column that "
                                  r"holds the values to predict \(--target\)$"),
], ids=["no-header", "space-separated", "one-column"])
def test_a_csv_without_the_target_column_is_told_why(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_dataset("csv", path=path, target="species", task="classification")


def test_a_class_written_two_ways_names_the_file_and_the_line(tmp_path):
    """'1' and '1.0' in a target column were refused naming neither the file nor a line."""
    path = tmp_path / "labels.csv"
    path.write_text("a,b,y\n1,2,1\n3,4,0\n5,6,1.0\n7,8,0\n")
    with pytest.raises(DatasetError, match=r"labels.csv, line 4, column 'y': '1.0' is the class '1' of line 2 "
                                           r"written another way: write each class one way$"):
        load_dataset("csv", path=path, target="y", task="classification")
    np.savez(tmp_path / "labels.npz", x=np.arange(16.0).reshape(8, 2), y=np.array(["1", "0", "1.0", "0"] * 2))
    with pytest.raises(DatasetError, match=r"labels.npz: class values '1', '1.0' name the same number in different "
                                           r"ways: write each class one way$"):
        load_dataset("npz", path=tmp_path / "labels.npz")


def test_csv_needs_a_header_and_a_task(tmp_path):
    path = tmp_path / "noheader.csv"
    path.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DatasetError, match="header row naming the columns is required"):
        load_dataset("csv", path=path, target="3", task="regression")
    path = write_csv(tmp_path / "pets.csv", ROWS)
    with pytest.raises(DatasetError, match="say what the target is with --task classification or --task regression"):
        load_dataset("csv", path=path, target="kind")
    # The columns to choose the target from were left to be looked up in the file.
    with pytest.raises(DatasetError, match="pets.csv: name the column to predict \\(--target\\); the columns are: a, "
                                           "b, kind$"):
        load_dataset("csv", path=path, task="classification")


# --------------------------------------------------------------------------------------------
# NPZ

def test_an_npz_with_x_and_y_and_a_test_split_is_refused_not_half_read(tmp_path):
    """x_test and y_test beside x and y were ignored without a word: the model was scored on rows drawn
    from x, and never on the test rows the file gave."""
    x, y = np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 2
    np.savez(tmp_path / "mixed.npz", x=x, y=y, x_test=x[:4], y_test=y[:4])
    with pytest.raises(DatasetError, match=r"mixed.npz: holds x and y and also x_test, y_test: an npz holds x and y, "
                                           r"from which the test rows are drawn, or x_train, y_train, x_test and "
                                           r"y_test; keep one set \(rename x and y to x_train and y_train"):
        load_dataset("npz", path=tmp_path / "mixed.npz")


def test_an_npz_with_x_and_y_beside_a_whole_split_is_not_told_to_rename_them_over_it(tmp_path):
    """x and y beside x_train, y_train, x_test and y_test were refused with the advice to rename x and y to
    x_train and y_train, arrays the file already holds."""
    x, y = np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 2
    np.savez(tmp_path / "both.npz", x=x, y=y, x_train=x[4:], y_train=y[4:], x_test=x[:4], y_test=y[:4])
    with pytest.raises(DatasetError, match=r"both.npz: holds x and y and also x_test, x_train, y_test, y_train: an "
                                           r"npz holds x and y, from which the test rows are drawn, or x_train, "
                                           r"y_train, x_test and y_test; keep one set$"):
        load_dataset("npz", path=tmp_path / "both.npz")


def test_npz_with_split_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=rng.random((20, 3, 3)), y_train=rng.integers(0, 3, 20),
             x_test=rng.random((5, 3, 3)), y_test=np.array([0, 1, 2, 1, 0]), labels=np.array(["a", "b", "c"]))
    data = load_dataset("npz", path=path)
    assert data.task == "classification" and data.labels == ["a", "b", "c"]
    assert data.x_train.shape == (20, 9) and data.x_train.dtype == np.float32
    assert data.y_test.tolist() == [0, 1, 2, 1, 0]


def test_npz_without_test_split_holds_out(tmp_path):
    path = tmp_path / "r.npz"
    np.savez(path, x=np.arange(100.0).reshape(50, 2), y=np.linspace(0, 1, 50))
    data = load_dataset("npz", path=path, seed=3)
    assert data.task == "regression"
    assert (len(data.x_train), len(data.x_test)) == (40, 10)


@pytest.mark.parametrize("names", [np.array(["dog", "cat", "cat", "bird"] * 10),
                                   np.array([b"dog", b"cat", b"cat", b"bird"] * 10)], ids=["str", "bytes"])
def test_npz_class_names_in_y_are_its_classes(tmp_path, names):
    """y as names (df.species.to_numpy(str)) was refused as 'not numeric'; a CSV's names are classes."""
    path = tmp_path / "pets.npz"
    np.savez(path, x=np.arange(80.0).reshape(40, 2), y=names)
    data = load_dataset("npz", path=path)
    assert data.task == "classification" and data.labels == ["bird", "cat", "dog"]
    rows = (data.x_test[:, 0] // 2).astype(int)  # each row's place in the file
    assert [data.labels[i] for i in data.y_test] == names.astype(str)[rows].tolist()
    with pytest.raises(DatasetError, match=r"pets.npz: y holds text \(.\w4\); a regression target must be numbers"):
        load_dataset("npz", path=path, task="regression")


def test_npz_boolean_features_are_0_and_1_and_targets_the_classes_false_and_true(tmp_path):
    """pandas' get_dummies gives booleans: they were refused as features, and as targets trained a regression.
    As classes they are named as a boolean is, and as a CSV's True/False column names them, not 0 and 1."""
    path = tmp_path / "flags.npz"
    x = np.arange(60).reshape(30, 2) % 3 == 0
    np.savez(path, x=x, y=x[:, 0])
    data = load_dataset("npz", path=path)
    assert data.task == "classification" and data.labels == ["False", "True"] and not data.labels_are_indices
    assert set(np.unique(data.x_train)) <= {0.0, 1.0} and data.y_train.dtype == np.int64
    csv = tmp_path / "flags.csv"
    csv.write_text("a,b,y\n" + "".join(f"{int(a)},{int(b)},{a}\n" for a, b in x))
    from_csv = load_dataset("csv", path=csv, target="y", task="classification")
    assert from_csv.labels == data.labels
    assert [data.labels[i] for i in data.y_train] == [str(v == 1) for v in data.x_train[:, 0]]  # y is x's column 0
    np.savez(path, x=x, y=x[:, 0], labels=np.array(["no", "yes"]))  # a labels array still names them
    assert load_dataset("npz", path=path).labels == ["no", "yes"]


def test_npz_one_hot_targets_say_how_to_store_them(tmp_path):
    path = tmp_path / "onehot.npz"
    np.savez(path, x=np.arange(20.0).reshape(10, 2), y=np.eye(3, dtype=np.float32)[np.arange(10) % 3])
    with pytest.raises(DatasetError, match=r"onehot.npz: y must hold one target per row \(shape \(n,\)\), got shape "
                                           r"\(10, 3\): its rows are one-hot, so store the class indices, "
                                           r"y.argmax\(axis=1\)$"):
        load_dataset("npz", path=path)


def test_npz_refuses_pickled_objects_and_missing_arrays(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1),
             x_test=np.zeros((1, 1)), y_test=np.zeros(1))
    with pytest.raises(DatasetError, match=r"evil.npz: array 'x_train' holds Python objects \(pickle\); refused"):
        load_dataset("npz", path=path)
    np.savez(path, features=np.zeros((3, 2)))
    with pytest.raises(DatasetError, match="expected arrays x_train, y_train, x_test, y_test.*found features"):
        load_dataset("npz", path=path)


def test_npz_truncated_or_damaged_is_a_clear_error(tmp_path):
    good = tmp_path / "good.npz"
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.savez(good, x=x, y=np.arange(20) % 2)
    raw = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="cut.npz: cannot read as .npz: not an .npz archive"):
        load_dataset("npz", path=tmp_path / "cut.npz")
    damaged = bytearray(raw)
    damaged[100:110] = b"\xff" * 10  # inside the first member's data: the central directory is intact
    (tmp_path / "crc.npz").write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match="crc.npz: cannot read as .npz: damaged archive"):
        load_dataset("npz", path=tmp_path / "crc.npz")
    # The first bytes overwritten: zipfile still finds the archive by its end, NumPy took it for a
    # pickle and the error advised loading it with allow_pickle.
    (tmp_path / "head.npz").write_bytes(b"XXXX" + raw[4:])
    with pytest.raises(DatasetError, match="head.npz: cannot read as .npz: not an .npz archive") as refused:
        load_dataset("npz", path=tmp_path / "head.npz")
    assert "pickle" not in str(refused.value)


def test_a_csv_given_as_an_npz_is_told_to_use_the_csv_dataset(tmp_path):
    """--dataset npz --data-path wines.csv was told "not an .npz archive (a zip of .npy arrays), or a truncated
    one", sending the user to look for a damaged file, where an npz given as a csv is told to use --dataset npz."""
    path = write_csv(tmp_path / "pets.csv", ROWS)
    with pytest.raises(DatasetError, match=r"pets.csv: cannot read as .npz: not an .npz archive \(a zip of .npy "
                                           r"arrays\): it reads as text, as a csv does: use --dataset csv \(with "
                                           r"--target and --task\)$"):
        load_dataset("npz", path=path)
    accented = ("k,a\n" + "caf\u00e9,1\n" * 2000).encode()
    assert accented[4095:4097] == "\u00e9".encode()  # the first 4096 bytes, read to tell text, end inside a character
    (tmp_path / "accented.csv").write_bytes(accented)
    with pytest.raises(DatasetError, match=r"it reads as text, as a csv does"):
        load_dataset("npz", path=tmp_path / "accented.csv")
    (tmp_path / "noise.npz").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DatasetError, match=r"noise.npz: cannot read as .npz: not an .npz archive \(a zip of .npy "
                                           r"arrays\), or a truncated one$"):
        load_dataset("npz", path=tmp_path / "noise.npz")


def test_npz_of_no_arrays_says_so_and_names_the_arrays_expected(tmp_path):
    """numpy.savez(path) with nothing to save writes a whole archive of no members: it was called
    not an .npz, or a truncated one, which sent the user looking for a damaged file."""
    path = tmp_path / "nothing.npz"
    np.savez(path)
    with pytest.raises(DatasetError) as refused:
        load_dataset("npz", path=path)
    message = str(refused.value)
    assert message.startswith(f"{path}: holds no arrays: expected arrays x_train, y_train, x_test, y_test (or x, y)")
    assert "truncated" not in message and "not an .npz" not in message


def test_npz_class_index_far_beyond_any_classifier_is_refused(tmp_path):
    """A quantity stored as integers would otherwise become a network with a billion outputs."""
    path = tmp_path / "counts.npz"
    np.savez(path, x=np.arange(20, dtype=np.float32).reshape(10, 2), y=np.array([0, 1] * 4 + [10**9, 3]))
    with pytest.raises(DatasetError, match="class index 1000000000.*--task regression"):
        load_dataset("npz", path=path)
    assert load_dataset("npz", path=path, task="regression").task == "regression"


def test_a_target_of_more_classes_than_a_classifier_has_is_refused_in_a_csv_as_in_an_npz(tmp_path):
    """An npz's class indices stopped at 10,000 classes; a csv's column of ids (12,000) trained, and its scoring
    then built a confusion matrix of 144 million cells (1.2 GB, and 10 GB more to plot it)."""
    path = tmp_path / "customers.csv"
    path.write_text("a,customer\n" + "".join(f"{i % 7},C{i:05d}\n" for i in range(10_001)))
    message = (r"customers.csv: the target holds 10,001 different values, but a classifier here has at most 10,000 "
               r"classes: a target with a value of its own for nearly every row \(an id\) has no classes to learn")
    with pytest.raises(DatasetError, match=message):
        load_dataset("csv", path=path, target="customer", task="classification")
    names = tmp_path / "customers.npz"
    np.savez(names, x=np.arange(10_001.0).reshape(-1, 1) % 7, y=np.array([f"C{i:05d}" for i in range(10_001)]))
    with pytest.raises(DatasetError, match="customers.npz: the target holds 10,001 different values"):
        load_dataset("npz", path=names)
    path.write_text("a,customer\n" + "".join(f"{i % 7},C{i:05d}\n" for i in range(10_000)))
    assert load_dataset("csv", path=path, target="customer", task="classification").n_classes == 10_000


@pytest.mark.parametrize("value", ["nan", "NaN", "inf"])
def test_csv_missing_class_value_is_refused(tmp_path, value):
    path = tmp_path / "t.csv"
    path.write_text(f"a,b,label\n1,2,0\n3,4,1\n5,6,{value}\n7,8,1\n")
    with pytest.raises(DatasetError, match=f"t.csv, line 4, column 'label': '{value}' is a missing"):
        load_dataset("csv", path=path, target="label", task="classification")


@pytest.mark.parametrize("options, flag", [({"path": "x.csv"}, "--data-path"), ({"target": "y"}, "--target"),
                                           ({"task": "classification"}, "--task classification")])
def test_known_dataset_refuses_the_options_of_a_file_dataset(options, flag):
    """They would be ignored: a wine model trained as a 'classifier' would silently be a regression."""
    with pytest.raises(DatasetError, match=f"wine-quality is a known dataset.*{flag} applies to csv and npz"):
        load_dataset("wine-quality", download=False, **options)


# --------------------------------------------------------------------------------------------
# Splits

def test_grouped_holdout_keeps_duplicates_together_and_is_deterministic():
    rng = np.random.default_rng(0)
    distinct = rng.random((60, 4)).astype(np.float32)
    x = distinct[rng.integers(0, 60, 500)]  # many duplicated rows
    train, test = grouped_holdout(x, 0.2, seed=7)
    assert sorted([*train, *test]) == list(range(500))
    assert not {tuple(r) for r in x[train]} & {tuple(r) for r in x[test]}
    assert 100 <= len(test) < 100 + 30
    again = grouped_holdout(x, 0.2, seed=7)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, grouped_holdout(x, 0.2, seed=8)[1])


def test_validation_split_is_deterministic_and_disjoint():
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.arange(100)
    x_tr, y_tr, x_val, y_val = validation_split(x, y, 0.1, seed=5)
    assert (len(x_tr), len(x_val)) == (90, 10)
    assert sorted([*y_tr, *y_val]) == list(range(100))
    np.testing.assert_array_equal(x_val[:, 0], y_val * 2)  # rows stay paired
    np.testing.assert_array_equal(validation_split(x, y, 0.1, seed=5)[3], y_val)
    assert not np.array_equal(validation_split(x, y, 0.1, seed=6)[3], y_val)
    with pytest.raises(ValueError):
        validation_split(x, y, 1.0, seed=0)


# --------------------------------------------------------------------------------------------
# Real datasets, read from the data folder

@pytest.mark.parametrize("name, labels0", [("mnist", "0"), ("fashion-mnist", "T-shirt/top")])
def test_real_image_datasets(datasets_dir, name, labels0):
    start = time.perf_counter()
    data = load_dataset(name, data_dir=datasets_dir)
    print(f"\n{name} loaded in {time.perf_counter() - start:.2f} s")
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.x_train.dtype == np.float32 and data.x_train.flags.c_contiguous
    assert data.y_train.dtype == np.int64
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert np.bincount(data.y_train).tolist() == (
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949] if name == "mnist" else [6000] * 10)
    assert np.bincount(data.y_test, minlength=10).sum() == 10000 and data.y_test.max() == 9
    assert data.labels[0] == labels0 and len(data.labels) == 10
    assert data.input_kind == "image" and data.task == "classification"
    assert data.preprocessing == {"type": "image", "size": [28, 28], "fit": "digit" if name == "mnist" else "garment",
                                  "polarity": "light_on_dark"}
    expected_sums = dict(line.split()[::-1] for line in (datasets_dir / name / "SHA256SUMS").read_text().splitlines())
    assert data.files == expected_sums


def test_real_wine_quality(datasets_dir):
    red = load_dataset("wine-quality", data_dir=datasets_dir / "wine-quality", seed=0)
    assert red.task == "regression" and red.target == "quality" and red.labels is None
    assert red.x_train.shape[1] == 11 and len(red.x_train) + len(red.x_test) == 1599
    assert 300 <= len(red.x_test) <= 340
    assert red.y_train.dtype == np.float32 and set(np.unique(red.y_train)) <= set(range(3, 9))
    assert red.feature_names[0] == "fixed acidity" and red.feature_names[-1] == "alcohol"
    assert red.x_train[:, red.feature_names.index("pH")].min() > 2.5  # unscaled
    # The red file has many duplicated rows; none straddles the split.
    assert not {r.tobytes() for r in red.x_train} & {r.tobytes() for r in red.x_test}
    again = load_dataset("wine-quality", data_dir=datasets_dir, seed=0)
    np.testing.assert_array_equal(again.x_test, red.x_test)
    other = load_dataset("wine-quality", data_dir=datasets_dir, seed=1)
    assert not np.array_equal(other.x_test, red.x_test)

    both = load_dataset("wine-quality", data_dir=datasets_dir, variant="both")
    assert both.feature_names[-1] == "is_red" and both.x_train.shape[1] == 12
    assert len(both.x_train) + len(both.x_test) == 1599 + 4898
    is_red = np.concatenate([both.x_train[:, -1], both.x_test[:, -1]])
    assert set(np.unique(is_red)) == {0.0, 1.0} and is_red.sum() == 1599
    assert set(both.files) == {"winequality-red.csv", "winequality-white.csv"}


@pytest.mark.parametrize("options, flag", [({"variant": "red"}, "--variant"), ({"data_dir": "data"}, "--data-dir")])
@pytest.mark.parametrize("kind", ["csv", "npz"])
def test_file_datasets_refuse_the_options_of_a_known_dataset(tmp_path, kind, options, flag):
    """They would be ignored: a file is read from --data-path, and only wine-quality has variants."""
    path = tmp_path / f"d.{kind}"
    if kind == "csv":
        write_csv(path, ROWS)
    else:
        np.savez(path, x=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    with pytest.raises(DatasetError, match=f"{flag} applies to the known datasets"):
        load_dataset(kind, path=path, target="kind", task="classification", **options)


def test_npz_refuses_a_target_column(tmp_path):
    """An npz's target is its y array; --target names a CSV column and would be ignored."""
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    with pytest.raises(DatasetError, match="d.npz: --target names a csv column; an npz's target is its y"):
        load_dataset("npz", path=path, target="label")


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("empty", ["x_train", "x_test", "x"])
def test_npz_with_an_empty_array_is_refused_naming_it(tmp_path, empty, task):
    """An empty test split scored as NaN and was saved; an empty training split failed with a
    ZeroDivisionError traceback or a message naming neither the file nor the array."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = np.arange(30) % 2 if task == "classification" else rng.normal(size=30)
    arrays = {"x": x, "y": y} if empty == "x" else {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    arrays[empty] = np.zeros((0, 3))
    arrays["y" + empty[1:]] = y[:0]
    path = tmp_path / "e.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=f"e.npz: {empty} holds no rows"):
        load_dataset("npz", path=path)


def test_a_file_too_small_to_split_says_what_to_do(tmp_path):
    """One or two rows cannot be split into training and held-out rows: the message said only that."""
    one_row = tmp_path / "one.csv"
    one_row.write_text("a,b,kind\n1,2,x\n")
    with pytest.raises(DatasetError, match=r"cannot hold out a test split from 1 row: give more rows, or an npz "
                                           r"with its own x_test and y_test$"):
        load_dataset("csv", path=one_row, target="kind", task="classification")
    with pytest.raises(DatasetError, match=r"train without a validation split \(--val-fraction 0\)$"):
        validation_split(np.zeros((1, 2)), np.zeros(1), 0.2, seed=0, grouped=True)


def test_csv_decimal_commas_are_named_as_such(tmp_path):
    """'0,5' in a semicolon-separated file (a spreadsheet in many locales) was called "not a number"."""
    path = tmp_path / "prices.csv"
    path.write_text("a;b;kind\n" + "".join(f"{i},5;{i};{i % 2}\n" for i in range(20)))
    with pytest.raises(DatasetError, match=r"prices.csv, line 2, column 'a': '0,5' is a number written with a "
                                           r"decimal comma: write it with a point \(0.5, not 0,5\)"):
        load_dataset("csv", path=path, target="kind", task="classification")


@pytest.mark.parametrize("cell", ["1_2", "١٢", "１２"], ids=["underscore", "arabic-indic", "full-width"])
def test_csv_numbers_are_ascii_decimal_notation(tmp_path, cell):
    """float(), and so NumPy, reads '1_2', '١٢' and '１２' as 12: such a feature trained as 12 without a
    word, and such a regression target was 12 as well."""
    rows = list(ROWS)
    rows[3] = (4.0, cell, "bird")
    path = write_csv(tmp_path / "pets.csv", rows)
    with pytest.raises(DatasetError, match=rf"pets.csv, line 5, column 'b': {re.escape(repr(cell))} is not a number "
                                           r"as the CSV reader reads numbers: write it with the digits 0-9, a point "
                                           r"for decimals and no separators \(0.5, 1000\)$"):
        load_dataset("csv", path=path, target="kind", task="classification")
    path = write_csv(tmp_path / "r.csv", [(i, i % 7, i * 0.5) for i in range(20)] + [(1, 2, cell)],
                     header=("a", "b", "y"))
    with pytest.raises(DatasetError, match=rf"line 22, column 'y': {re.escape(repr(cell))} is not a finite number"):
        load_dataset("csv", path=path, target="y", task="regression")


def test_csv_numbers_in_ascii_decimal_notation_are_read(tmp_path):
    path = write_csv(tmp_path / "r.csv", [(" 1.5 ", "1e3", i) for i in range(10)] + [(".5", "-2.", 1),
                                                                                     ("+3", "4E-1", 2)],
                     header=("a", "b", "y"))
    data = load_dataset("csv", path=path, target="y", task="regression")
    rows = {tuple(row) for row in np.concatenate([data.x_train, data.x_test]).tolist()}
    assert rows == {(1.5, 1000.0), (0.5, -2.0), (3.0, np.float32(0.4))}


def test_csv_numbers_padded_with_no_break_spaces_are_read(tmp_path):
    """A spreadsheet or a web page exports '0.5\xa0': the number is ASCII, only the space is not."""
    path = write_csv(tmp_path / "r.csv", [(f"{i}.5\xa0", f"\u2009{i % 3}", i) for i in range(10)],
                     header=("a", "b", "y"))
    data = load_dataset("csv", path=path, target="y", task="regression")
    rows = {tuple(row) for row in np.concatenate([data.x_train, data.x_test]).tolist()}
    assert rows == {(i + 0.5, i % 3) for i in range(10)}
    # str.strip() also strips the separators \x1c-\x1f, which float() refuses: named, not a traceback.
    path = write_csv(tmp_path / "s.csv", [(i, f"{i}\x1f", i) for i in range(10)], header=("a", "b", "y"))
    with pytest.raises(DatasetError, match=r"s.csv, line 2, column 'b': '0\\x1f' is not a number"):
        load_dataset("csv", path=path, target="y", task="regression")


@pytest.mark.parametrize("cell, reading", [
    ("1,000", "is either 1.000, written with a decimal comma, or 1000, written with a thousands separator: write it "
              "with a point for decimals and no separator (0.5, 1000)"),
    ("-12,345", "is either -12.345, written with a decimal comma, or -12345, written with a thousands separator: "
                "write it with a point for decimals and no separator (0.5, 1000)"),
    ("1,234,567", "is 1234567 written with thousands separators: write it without them (1000, not 1,000)"),
    ("1,000.5", "is 1000.5 written with thousands separators: write it without them (1000, not 1,000)"),
    ("0,5", "is a number written with a decimal comma: write it with a point (0.5, not 0,5)"),
    ("1,5000", "is a number written with a decimal comma: write it with a point (0.5, not 0,5)"),
], ids=["thousand", "negative", "millions", "thousands-and-point", "decimal", "decimal-of-four-digits"])
def test_csv_a_number_with_a_thousands_separator_is_not_taken_for_a_decimal_comma(tmp_path, cell, reading):
    """'1,000' was "a number written with a decimal comma: write it with a point": followed, that
    turned 1000 into 1.0."""
    path = tmp_path / "prices.csv"
    path.write_text("a;b;kind\n" + "".join(f"{cell};{i};{i % 2}\n" for i in range(20)))
    with pytest.raises(DatasetError, match=rf"prices.csv, line 2, column 'a': '{re.escape(cell)}' "
                                           rf"{re.escape(reading)}, as the CSV reader reads numbers$"):
        load_dataset("csv", path=path, target="kind", task="classification")


def train_as_a_user_without_a_home(*args) -> tuple[int, str]:
    """``python -m trainer train --dataset wine-quality ...`` as uid 4242, which has no entry in the
    password database, with HOME unset (a container or batch job run under an arbitrary uid): in a
    forked child that has given up root, once everything it needs is imported (the interpreter's
    own files may not be readable by that uid). Needs root. ``(exit status, stderr)``."""
    report.require_plotting()
    import matplotlib.pyplot  # noqa: F401 - imported here, where the interpreter's files can be read
    for codec in ("utf-8-sig", "cp437"):  # the wine CSV's and zipfile's, modules of the interpreter's
        codecs.lookup(codec)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 99
        try:
            sys.stderr = open(write_end, "w")  # what the CLI prints, past pytest's capture
            os.setgroups([])
            os.setgid(4242)
            os.setuid(4242)
            for name in ("HOME", "SCRATCHNET_CACHE", "SCRATCHNET_DATA_DIR"):
                os.environ.pop(name, None)
            status = cli.main(["train", "--dataset", "wine-quality", "--epochs", "1", "--no-progress",
                               *map(str, args)])
        except BaseException:  # noqa: BLE001 - reported to the parent through stderr and the status
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        stderr = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stderr


def test_without_a_home_folder_the_cache_asks_for_a_folder_and_a_data_folder_needs_none(datasets_dir):
    needs_root("running as a uid without a home folder")  # and handing it the output folder first
    out = Path(tempfile.mkdtemp(prefix="scratchnet-homeless-"))  # pytest's own folders are root's alone
    try:
        os.chown(out, 4242, 4242)
        status, stderr = train_as_a_user_without_a_home("--output", out)
        assert status == 2 and "Traceback" not in stderr, stderr
        assert "there is no home folder for the download cache" in stderr and "--cache-dir" in stderr
        status, stderr = train_as_a_user_without_a_home("--data-dir", datasets_dir, "--output", out)
        assert status == 0, stderr
        assert (out / "model.npz").is_file()
    finally:
        shutil.rmtree(out)


def test_the_type_named_decides_how_a_file_is_read_not_its_suffix(tmp_path):
    npz = tmp_path / "arrays.dat"
    with open(npz, "wb") as f:
        np.savez(f, x=np.arange(20.0).reshape(10, 2), y=np.arange(10) % 2)
    assert load_dataset("npz", path=npz).n_features == 2
    csv = tmp_path / "table.npz"
    csv.write_text("a,b,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(10)))
    assert load_dataset("csv", path=csv, target="y", task="classification").feature_names == ["a", "b"]


def test_npz_that_numpy_reads_but_holds_no_usable_arrays_is_refused_naming_it(tmp_path):
    import zipfile

    path = tmp_path / "notes.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.txt", "not an array")
        archive.writestr("y.txt", "nor this")
    with pytest.raises(DatasetError, match="notes.npz: the member 'x.txt' is not a .npy array"):
        load_dataset("npz", path=path)
    np.savez(path, x=np.array(3.0), y=np.array([1]))
    with pytest.raises(DatasetError, match=r"notes.npz: x holds a single value \(shape \(\)\)"):
        load_dataset("npz", path=path)


@pytest.mark.parametrize("labels, message", [
    (["cat", "dog", "cat"], "labels names the class cat more than once"),
    ([["cat", "dog", "eel"]], r"labels has shape \(1, 3\)"),
    (["cat", " ", "eel"], r"labels holds an empty class name \(index 1\)"),
    (["cat"], r"labels names 1 class, but the targets go up to class index 2: give labels one name for each class "
              r"index, 0 to 2, in their order"),
    (["cat", "dog"], "labels names 2 classes, but"),
])
def test_npz_labels_that_cannot_name_the_classes_are_refused_at_load(tmp_path, capsys, labels, message):
    """Naming a class twice was refused only once the model was written, naming a deleted temporary file."""
    path = tmp_path / "animals.npz"
    np.savez(path, x=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 3, labels=np.array(labels))
    with pytest.raises(DatasetError, match=f"animals.npz: {message}"):
        load_dataset("npz", path=path)
    assert cli.main(["train", "--dataset", "npz", "--data-path", str(path), "--epochs", "1", "--no-progress",
                     "--output", str(tmp_path / "run")]) == 2
    assert "animals.npz" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_npz_values_beyond_float32_are_named_by_their_place_in_the_file(tmp_path, capsys):
    """They were named by their row in the shuffled training split, under an array name the file does not
    hold (x_train at [127, 1] for the file's x[101, 0])."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 3)), rng.normal(size=200)
    x[101, 0] = -4e38
    path = tmp_path / "wide.npz"
    np.savez(path, x=x, y=y)
    message = r"wide.npz: x\[101, 0\] is -4e\+38, beyond float32's range \(±3.4e\+38\), in which the network " \
              r"computes: scale the data down, or drop that row"
    with pytest.raises(DatasetError, match=message):
        load_dataset("npz", path=path)
    x[101, 0], y[7] = 1.0, 1e39
    np.savez(path, x=x, y=y)
    with pytest.raises(DatasetError, match=r"wide.npz: y\[7\] is 1e\+39, beyond float32's range"):
        load_dataset("npz", path=path)
    assert cli.main(["train", "--dataset", "npz", "--data-path", str(path), "--no-progress",
                     "--output", str(tmp_path / "run")]) == 2
    assert "y[7] is 1e+39" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_npz_missing_and_infinite_values_are_named_by_their_place_with_the_way_out(tmp_path):
    """They were refused as "x holds NaN or infinite values", naming neither the value's place among thousands
    nor what to do, where a csv's are named by line and column."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 2, 3)), rng.normal(size=200)
    path = tmp_path / "gaps.npz"
    for arrays, message in [
        ({"x": np.where(np.arange(200 * 6).reshape(200, 2, 3) == 57 * 6 + 5, np.nan, x), "y": y},
         r"gaps.npz: x\[57, 1, 2\] is NaN, a missing value: every feature needs one; fill in the missing values "
         "or drop those rows"),
        ({"x": x, "y": np.where(np.arange(200) == 9, -np.inf, y)},
         r"gaps.npz: y\[9\] is -inf, not finite: replace it with a finite number or drop that row"),
        ({"x_train": x, "y_train": y, "x_test": x[:5], "y_test": np.array([0.1, np.nan, 0.3, 0.4, 0.5])},
         r"gaps.npz: y_test\[1\] is NaN, a missing value: every row needs a target; fill in the missing targets "
         "or drop those rows"),
    ]:
        np.savez(path, **arrays)
        with pytest.raises(DatasetError, match=f"/{message}$"):
            load_dataset("npz", path=path)


@pytest.mark.parametrize("arrays, key, shape", [
    ({"x": np.zeros((100, 0)), "y": np.arange(100) % 2}, "x", (100, 0)),
    ({"x": np.zeros((100, 3, 0)), "y": np.arange(100) % 2}, "x", (100, 3, 0)),
    ({"x_train": np.zeros((80, 0)), "y_train": np.arange(80) % 2, "x_test": np.zeros((20, 0)),
      "y_test": np.arange(20) % 2}, "x_train", (80, 0)),
])
def test_npz_features_without_columns_are_named_as_such(tmp_path, arrays, key, shape):
    """Every row is then the same empty row: the test split could not be drawn, which is what the message said."""
    path = tmp_path / "none.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=rf"none.npz: {key} has no features \(shape {re.escape(str(shape))}\): "
                                           "each row needs at least one value"):
        load_dataset("npz", path=path)


def test_npz_labels_stored_as_bytes_name_the_classes_as_text(tmp_path):
    """numpy stores text written as bytes with dtype S: the classes were named b'neg' and b'pos'."""
    path = tmp_path / "bytes.npz"
    x = np.random.default_rng(0).normal(size=(40, 3))
    np.savez(path, x=x, y=np.arange(40) % 2, labels=np.array([b"neg", b"pos"]))
    assert load_dataset("npz", path=path).labels == ["neg", "pos"]
    np.savez(path, x=x, y=np.arange(40) % 2, labels=np.array([b"neg", b"\xff"]))
    with pytest.raises(DatasetError, match="bytes.npz: labels holds bytes that are not ASCII text"):
        load_dataset("npz", path=path)


def test_npz_labels_make_float_targets_class_indices(tmp_path, capsys):
    """y stored as floats (0.0, 1.0), as pandas writes a column with a missing value once filled, was read
    as a quantity, and the labels array naming its classes was ignored without a word."""
    path = tmp_path / "float.npz"
    x = np.random.default_rng(0).normal(size=(40, 3))
    np.savez(path, x=x, y=(np.arange(40) % 2).astype(np.float64), labels=np.array(["neg", "pos"]))
    data = load_dataset("npz", path=path)
    assert data.task == "classification" and data.labels == ["neg", "pos"]
    with pytest.raises(DatasetError, match="float.npz: a labels array names classes, and a regression target has "
                                           "none: train with --task classification, or drop the labels array"):
        load_dataset("npz", path=path, task="regression")
    # Scoring a regression model, its task is the model's: only dropping the array helps.
    with pytest.raises(DatasetError, match="float.npz: a labels array names classes, and a regression target has "
                                           "none: drop the labels array to score it$"):
        load_dataset("npz", path=path, task="regression", test_only=True, model_task="regression")
    np.savez(path, x=x, y=np.linspace(0, 1, 40), labels=np.array(["neg", "pos"]))
    message = (r"float.npz: y\[1\] is 0.025641, not a class index: classification takes class indices 0, 1, 2, "
               r"... \(or class names\) in y; store those, or train with --task regression, without a labels array, "
               "to predict y as a quantity")
    with pytest.raises(DatasetError, match=message):
        load_dataset("npz", path=path)
    assert cli.main(["train", "--dataset", "npz", "--data-path", str(path), "--no-progress",
                     "--output", str(tmp_path / "run")]) == 2
    assert "y[1] is 0.025641, not a class index" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.linspace(0, 1, 40)}, r"y\[1\] is 0.025641, not a class index"),
    ({"y": np.arange(40) - 3}, r"y\[0\] is -3, not a class index"),
    ({"x_train": np.zeros((30, 3)), "y_train": np.arange(30) % 2, "x_test": np.zeros((10, 3)),
      "y_test": np.arange(10) * 0.5}, r"y_test\[1\] is 0.5, not a class index"),
])
def test_targets_that_are_no_class_index_are_named_where_the_file_holds_them(tmp_path, arrays, message):
    """One check serves the targets a labels array makes classes and those --task classification does."""
    path = tmp_path / "targets.npz"
    np.savez(path, **({"x": np.zeros((40, 3))} if "y" in arrays else {}), **arrays)
    with pytest.raises(DatasetError, match=message + r": classification takes class indices 0, 1, 2, \.\.\. "
                                                     r"\(or class names\)"):
        load_dataset("npz", path=path, task="classification")


def test_an_empty_variant_is_refused_not_read_as_red(tmp_path, capsys):
    with pytest.raises(DatasetError, match="wine-quality variant must be one of red, white, both, not ''"):
        load_dataset("wine-quality", variant="", download=False)
    config = tmp_path / "run.toml"
    config.write_text('dataset = "wine-quality"\nvariant = ""\n')
    for flags in (["--variant", ""], ["--config", str(config)]):
        assert cli.main(["train", "--dataset", "wine-quality", *flags, "--no-progress",
                         "--output", str(tmp_path / "run")]) == 2
        assert "variant must be one of red, white, both, not ''" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_a_class_written_one_way_in_the_training_file_and_another_in_the_test_file_names_both(tmp_path):
    """'1' in a csv and '1.0' in its --test-path file were refused naming the training file alone."""
    train = write_csv(tmp_path / "train.csv", [(1, 2, 1), (3, 4, 0)], header=("a", "b", "y"))
    test = write_csv(tmp_path / "test.csv", [(5, 6, "1.0"), (7, 8, 0)], header=("a", "b", "y"))
    with pytest.raises(DatasetError, match=r"^train.csv, test.csv: class values '1' \(in train.csv\), '1.0' \(in "
                                           r"test.csv\) name the same number in different ways: write each class "
                                           r"one way$"):
        load_dataset("csv", path=train, test_path=test, target="y", task="classification")
