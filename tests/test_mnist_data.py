"""IDX parsing, checksums and download, with tiny synthetic files (no network)."""
import gzip
import hashlib
import http.client
import io
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA_DIR, need_data
from data import DataError, mnist, truthfulqa


def test_idx_round_trip_gz_and_raw(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    for suffix in ("", ".gz"):
        mnist.write_idx(tmp_path / f"i{suffix}", imgs)
        mnist.write_idx(tmp_path / f"l{suffix}", labels)
        read = lambda p: gzip.decompress(p.read_bytes()) if suffix else p.read_bytes()
        assert np.array_equal(mnist.parse_idx(read(tmp_path / f"i{suffix}"), "i"), imgs)
        assert np.array_equal(mnist.parse_idx(read(tmp_path / f"l{suffix}"), "l"), labels)


def test_image_file_written_by_hand_from_the_spec(tmp_path):
    # written byte by byte (not by write_idx, which could share a mistake with the parser): magic 0x00000803 (2051,
    # unsigned bytes, 3 dimensions), then count, rows, cols big-endian, then the pixels row by row
    raw = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (2, 2, 3)) + bytes(range(12))
    x = mnist.parse_idx(raw, "x")
    assert x.shape == (2, 2, 3) and x[0, 1].tolist() == [3, 4, 5] and x[1, 0, 2] == 8
    mnist.write_idx(tmp_path / "x", x)  # and the writer writes those very bytes
    assert (tmp_path / "x").read_bytes() == raw


@need_data()
def test_real_mnist_known_labels_and_upright_digits():
    d = mnist.load(DATA_DIR)
    assert d["train_y"][:5].tolist() == [5, 0, 4, 1, 9] and d["test_y"][:5].tolist() == [7, 2, 1, 0, 4]
    # a transposed parse would still train: check orientation. Ones are upright strokes: their mean image spreads
    # over more rows than columns
    ink = d["train_x"][d["train_y"] == 1].astype(np.float64).mean(0)
    spread = lambda profile: np.sqrt((profile * (np.arange(28) - (profile * np.arange(28)).sum()) ** 2).sum())
    rows, cols = ink.sum(1) / ink.sum(), ink.sum(0) / ink.sum()
    assert spread(rows) > 1.5 * spread(cols)  # 5.6 against 2.4 pixels; transposed, 2.4 against 5.6


def test_bad_magic_truncated_and_wrong_count():
    good = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    assert mnist.parse_idx(good, "x").tolist() == [1, 2, 3]
    with pytest.raises(DataError, match="magic number 1234"):
        mnist.parse_idx((1234).to_bytes(4, "big") + good[4:], "x")
    with pytest.raises(DataError, match="truncated"):
        mnist.parse_idx(good[:-1], "x")
    with pytest.raises(DataError, match="truncated"):
        mnist.parse_idx(good[:5], "x")
    with pytest.raises(DataError, match=r"truncated \(no image header\)"):  # an image file cut inside rows, cols
        mnist.parse_idx(b"\x00\x00\x08\x03" + (1).to_bytes(4, "big") + b"\x00\x00", "x")
    with pytest.raises(DataError, match="holds 3 items, expected 60000"):
        mnist.parse_idx(good, "x", expect_count=60000)
    with pytest.raises(DataError, match="trailing bytes"):  # a longer file is not the file either
        mnist.parse_idx(good + b"\x00", "x")
    # a damaged image header whose sizes multiply to the right length: -1 x -1 x 1 images of 1 byte
    bad = b"\x00\x00\x08\x03" + b"".join(v.to_bytes(4, "big", signed=True) for v in (-1, -1, 1)) + b"\x07"
    with pytest.raises(DataError, match=r"negative size in its header \(-1, -1, 1\)"):
        mnist.parse_idx(bad, "x")


def test_a_gzip_damaged_inside_is_a_data_error_also_unverified(tmp_path):
    # damaged compressed data behind a valid gzip header raised zlib.error, not a DataError (with verify=False, for
    # one's own IDX files, the MD5 check does not catch it first)
    _fake_dataset(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    start = 10 if not raw[3] & 8 else raw.index(0, 10) + 1  # the deflate data, after the header (and a file name)
    raw[start] = 0xff  # an invalid block type
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="is not a readable gzip file"):
        mnist.load(tmp_path, "mnist", download=False, verify=False)


def _fake_dataset(folder):
    folder.mkdir(parents=True)
    for i, name in enumerate(mnist.FILES):
        arr = np.zeros((2, 28, 28) if "images" in name else (2,), np.uint8)
        mnist.write_idx(folder / (name + ".gz"), arr)


def test_checksum_mismatch_names_file_expected_and_found(tmp_path):
    _fake_dataset(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    found = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DataError) as e:
        mnist.load(tmp_path, "mnist", download=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and mnist.DATASETS["mnist"]["md5_gz"][0] in msg and found in msg
    # with verification off (own IDX files) the same files load
    d = mnist.load(tmp_path, "mnist", download=False, verify=False)
    assert d["train_x"].shape == (2, 28, 28) and d["test_y"].dtype == np.int64


def test_images_and_labels_of_different_counts_are_rejected_even_unverified(tmp_path):
    _fake_dataset(tmp_path / "mnist")
    mnist.write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))  # 2 images, 3 labels
    with pytest.raises(DataError, match="test images .* and labels .* do not match"):
        mnist.load(tmp_path, "mnist", download=False, verify=False)


@need_data()
def test_uncompressed_original_files_load_and_verify(tmp_path):
    # users who gunzipped the distribution: raw files are checked against the raw MD5s, and load as the .gz do
    (tmp_path / "mnist").mkdir()
    for name in mnist.FILES:
        (tmp_path / "mnist" / name).write_bytes(gzip.decompress((DATA_DIR / "mnist" / (name + ".gz")).read_bytes()))
    raw, gz = mnist.load(tmp_path, "mnist", download=False), mnist.load(DATA_DIR, "mnist", download=False)
    assert all(np.array_equal(raw[k], gz[k]) for k in gz)
    # ... and a raw file that is not the original is caught by its MD5 (one pixel changed: still a valid IDX file)
    f = tmp_path / "mnist" / mnist.FILES[2]
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"checksum mismatch for {f}: expected MD5 "
                                        f"{mnist.DATASETS['mnist']['md5_raw'][2]}") as e:
        mnist.load(tmp_path, "mnist", download=False)
    # download off: nothing would be re-downloaded, so the message says where the original comes from instead
    assert "put the original there (download is off)" in str(e.value) and "re-download" not in str(e.value)
    assert mnist.DATASETS["mnist"]["mirrors"][0] in str(e.value)


def test_missing_files_without_network_say_where_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="download is off") as e:
        mnist.load(tmp_path, "fashion", download=False)
    assert str(tmp_path / "fashion-mnist") in str(e.value)
    assert all(f + ".gz" in str(e.value) for f in mnist.FILES)  # all four named, where to fetch each by hand
    assert all(m in str(e.value) for m in mnist.DATASETS["fashion"]["mirrors"])

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="could not be downloaded") as e:
        mnist.load(tmp_path, "mnist", download=True)
    assert "ossci-datasets" in str(e.value) and str(tmp_path / "mnist") in str(e.value)
    hint = str(e.value).split("). Put the four original", 1)[1]  # after the failed downloads: what to fetch by hand
    assert all(f + ".gz" in hint for f in mnist.FILES) and all(m in hint for m in mnist.DATASETS["mnist"]["mirrors"])
    assert not (tmp_path / "mnist").exists()  # the folder made for the download goes with it
    (tmp_path / "fashion-mnist").mkdir()  # one the user made stays
    with pytest.raises(DataError, match="could not be downloaded"):
        mnist.load(tmp_path, "fashion", download=True)
    assert (tmp_path / "fashion-mnist").is_dir()


@need_data()
def test_a_relative_data_dir_missed_from_another_folder_names_the_projects_only_where_it_has_them(tmp_path,
                                                                                                   monkeypatch):
    # the default data_dir "data" is relative: run from elsewhere, the hint points at the project's copy; a folder the
    # project does not hold gets no hint (it would send the user to an empty place)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="download is off") as e:
        mnist.load("data", "mnist", download=False)
    assert f"The project's {DATA_DIR / 'mnist'} has them: run from {DATA_DIR.parent}" in str(e.value)
    with pytest.raises(DataError, match="download is off") as e:
        mnist.load("nodata", "mnist", download=False)
    assert "The project's" not in str(e.value)


@need_data()
def test_a_download_that_arrives_whole_is_kept_and_loads(tmp_path, monkeypatch):
    # the original files served by the first mirror: one fetch each, then the same arrays as the project's copy
    class Resp(io.BytesIO):
        def __enter__(self):
            return self

    tried = []
    first = mnist.DATASETS["mnist"]["mirrors"][0]
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: tried.append(url) or Resp(
        (DATA_DIR / "mnist" / url.rsplit("/", 1)[1]).read_bytes()))
    got, want = mnist.load(tmp_path, "mnist"), mnist.load(DATA_DIR, "mnist", download=False)
    assert tried == [first + f + ".gz" for f in mnist.FILES]
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_download_verifies_md5_and_writes_atomically(tmp_path, monkeypatch):
    payload = b"some bytes"

    class Resp(io.BytesIO):
        def __enter__(self):
            return self

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Resp(payload))
    dest = tmp_path / "f.gz"
    with pytest.raises(DataError, match="expected 0+"):
        mnist.download("http://x/f.gz", dest, "0" * 32)
    assert not dest.exists() and not list(tmp_path.iterdir())  # nothing half-written is left
    mnist.download("http://x/f.gz", dest, hashlib.md5(payload).hexdigest())
    assert dest.read_bytes() == payload


@pytest.mark.parametrize("cut", [http.client.IncompleteRead(b"some"), TimeoutError("read timed out")])
def test_a_transfer_cut_short_tries_the_next_mirror_and_leaves_nothing_behind(tmp_path, monkeypatch, cut):
    class Cut(io.BytesIO):  # the first MiB arrives, then the connection breaks
        def __enter__(self):
            return self

        def read(self, n=-1):
            if self.tell():
                raise cut
            return super().read(n)

    tried = []
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout: tried.append(url) or Cut(b"x" * (2 << 20)))
    with pytest.raises(DataError, match="could not be downloaded"):
        mnist.load(tmp_path, "mnist", download=True)
    assert tried == [m + mnist.FILES[0] + ".gz" for m in mnist.DATASETS["mnist"]["mirrors"]]  # every mirror, in turn
    assert not (tmp_path / "mnist").exists()  # no .part file keeps the folder made for the download


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EFBIG"])
def test_a_download_that_fills_the_disk_is_a_full_disk_naming_the_file_not_every_mirror_failing(tmp_path, monkeypatch,
                                                                                                code):
    # was "could not be downloaded (each mirror: [Errno 28] ...). Put the four original files in ...": every mirror
    # tried in turn, filling the disk again, and a fix (files by hand) that needs the same space. A quota, a file
    # size limit the same
    import errno
    code = getattr(errno, code)

    class Full(io.BytesIO):  # the chunk written raises ENOSPC on a full disk; raised here at the same place
        def __enter__(self):
            return self

        def read(self, n=-1):
            raise OSError(code, os.strerror(code))

    tried = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: tried.append(url) or Full())
    with pytest.raises(OSError) as e:
        mnist.load(tmp_path, "mnist", download=True)
    gz = tmp_path / "mnist" / (mnist.FILES[0] + ".gz")
    assert (e.value.errno, e.value.filename) == (code, str(gz)) and not isinstance(e.value, DataError)
    assert tried == [mnist.DATASETS["mnist"]["mirrors"][0] + mnist.FILES[0] + ".gz"]  # one mirror: the disk is full
    assert not (tmp_path / "mnist").exists()  # no .part, no folder made for it
    with pytest.raises(OSError) as e:
        truthfulqa.load(tmp_path, "v1")
    assert (e.value.errno, e.value.filename) == (code, str(tmp_path / "truthfulqa" / "data" / "v1" / "mc_task.json"))
    assert not (tmp_path / "truthfulqa").exists()


def test_a_download_into_a_read_only_file_system_says_so_naming_the_file(tmp_path, monkeypatch):
    # a read-only disk refuses the .part's open with EROFS, which is no PermissionError, and its clean-up's unlink too
    # (even of a file that is not there): that unlink's traceback hid the download's, and the open's error read as
    # each mirror failing in turn
    import errno
    import data as data_module

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"x"))
    monkeypatch.setattr(data_module, "open", read_only, raising=False)
    monkeypatch.setattr(Path, "unlink", read_only)
    (tmp_path / "mnist").mkdir()
    with pytest.raises(OSError) as e:
        mnist.load(tmp_path, "mnist", download=True)
    assert (e.value.errno, e.value.filename) == (errno.EROFS, str(tmp_path / "mnist" / (mnist.FILES[0] + ".gz")))


def test_unknown_dataset():
    with pytest.raises(DataError, match="choose one of mnist, fashion"):
        mnist.load("data", "cifar")


def test_a_run_without_its_data_fails_in_one_line_and_leaves_no_run_directory(tmp_path, capsys):
    import train
    from conftest import ROOT
    out = tmp_path / "runs" / "new"
    argv = [str(ROOT / "configs" / "subliminal_mnist.py"), f"--data_dir={tmp_path / 'nodata'}", "--download=False",
            f"--out_dir={out}"]
    assert train.main(argv) == 2
    assert "download is off" in capsys.readouterr().err and not (tmp_path / "runs").exists()  # nor the
                                                                                              # folder made for it
    # an existing run directory is left as it was: it may hold earlier results
    out.mkdir(parents=True)
    (out / "results.json").write_text("{}")
    assert train.main(argv) == 2 and (out / "results.json").read_text() == "{}"


def test_a_file_or_folder_of_the_wrong_kind_is_a_data_error_and_leaves_no_run_directory(tmp_path, capsys):
    # each was a traceback (IsADirectoryError, NotADirectoryError, FileExistsError) that left config.json behind
    import train
    from conftest import ROOT
    file = tmp_path / "a_file"
    file.write_text("x")
    (tmp_path / "d" / "mnist").mkdir(parents=True)
    (tmp_path / "d" / "mnist" / "train-images-idx3-ubyte.gz").mkdir()
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "mnist").write_text("x")
    for data_dir, says in ((file, f"{file} is a file, where the folder {file / 'mnist'} should be"),
                           (tmp_path / "e", f"{tmp_path / 'e' / 'mnist'} is a file, where the folder"),
                           (tmp_path / "d", "train-images-idx3-ubyte.gz is not a file: remove it")):
        with pytest.raises(DataError, match=says.replace(".", r"\.")):
            mnist.load(data_dir, download=True)
        out = tmp_path / "runs" / "new"
        argv = [str(ROOT / "configs" / "subliminal_mnist.py"), f"--data_dir={data_dir}", f"--out_dir={out}"]
        assert train.main(argv) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and not (tmp_path / "runs").exists(), data_dir


# ----------------------------------------------------------------------------------------------------
# from a mutation audit of the loader: each of these bugs left the rest of the suite green

def test_a_file_holding_more_items_than_expected_is_refused_as_well_as_one_holding_fewer():
    # a bigger file of the same format (another dataset's) is not the file either: the count must match, not suffice
    three = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    assert mnist.parse_idx(three, "x", expect_count=3).tolist() == [1, 2, 3]
    with pytest.raises(DataError, match="holds 3 items, expected 2"):
        mnist.parse_idx(three, "x", expect_count=2)


def test_own_idx_files_of_another_image_size_are_refused_even_unverified(tmp_path):
    # load promises [N, 28, 28]: 27 x 27 images (verify=False skips the MD5) would fail deep inside the model instead
    _fake_dataset(tmp_path / "mnist")
    mnist.write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", np.zeros((2, 27, 27), np.uint8))
    with pytest.raises(DataError, match=r"train images \(2, 27, 27\) and labels \(2,\) do not match"):
        mnist.load(tmp_path, "mnist", download=False, verify=False)


def test_both_splits_labels_are_int64_and_images_stay_uint8(tmp_path):
    # cross_entropy takes int64 targets: uint8 labels of either split fail (or index wrongly) only once training runs
    _fake_dataset(tmp_path / "mnist")
    d = mnist.load(tmp_path, "mnist", download=False, verify=False)
    assert d["train_y"].dtype == d["test_y"].dtype == np.int64
    assert d["train_x"].dtype == d["test_x"].dtype == np.uint8
