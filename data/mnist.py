"""MNIST and Fashion-MNIST from the original IDX files, with download and checksum verification.

    from data.mnist import load
    d = load("data", "mnist")   # {"train_x": uint8 [60000, 28, 28], "train_y": int64 [60000], "test_x", "test_y"}

Files live in `data_dir/mnist/` (or `data_dir/fashion-mnist/`), gzipped (`*.gz`, as distributed) or raw.
Missing files are downloaded from the public mirrors below, tried in order, and written atomically; every file
is checked against the MD5 of the original distribution before it is used (`verify=False`, for one's own IDX
files, checks their format and sizes only).
"""
import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from data import DataError, download, download_folder, elsewhere, file_hash, path_problem, write_stopped

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DATASETS = {
    "mnist": {
        "folder": "mnist",
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/",
                    "http://yann.lecun.com/exdb/mnist/"],
        # md5 of the original .gz files, and of their uncompressed contents (for raw files)
        "md5_gz": ["f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                   "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"],
        "md5_raw": ["6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
                    "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"],
    },
    "fashion": {
        "folder": "fashion-mnist",
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"],
        "md5_gz": ["8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                   "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"],
        "md5_raw": ["f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                    "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"],
    },
}
COUNTS = (60000, 60000, 10000, 10000)  # items in each of FILES: load checks them when it verifies


def md5(path):
    return file_hash(path, "md5")


def parse_idx(raw, name, expect_count=None):
    """Bytes of an IDX file -> uint8 array. Images: magic 2051, [count, rows, cols]; labels: 2049, [count]."""
    if len(raw) < 8:
        raise DataError(f"{name} is truncated ({len(raw)} bytes): delete it and load again to re-download it")
    magic, count = struct.unpack(">ii", raw[:8])
    if magic == 2051:
        if len(raw) < 16:
            raise DataError(f"{name} is truncated (no image header): delete it and load again")
        rows, cols = struct.unpack(">ii", raw[8:16])
        shape, offset = (count, rows, cols), 16
    elif magic == 2049:
        shape, offset = (count,), 8
    else:
        raise DataError(f"{name} is not an IDX image or label file (magic number {magic}, expected 2051 "
                        f"or 2049): delete it and load again to re-download it")
    if min(shape) < 0:  # a damaged header: its product could still look like the right length
        raise DataError(f"{name} has a negative size in its header {shape}: delete it and load again")
    if expect_count is not None and count != expect_count:
        raise DataError(f"{name} holds {count} items, expected {expect_count}: is it the right file?")
    n = int(np.prod(shape))
    if len(raw) - offset != n:
        raise DataError(f"{name} is truncated or has trailing bytes ({len(raw) - offset} data bytes, expected "
                        f"{n}): delete it and load again to re-download it")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def write_idx(path, array):
    """Write a uint8 array as an IDX file (gzipped when path ends in .gz). Used by tests."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">ii", 2051 if array.ndim == 3 else 2049, array.shape[0])
    if array.ndim == 3:
        header += struct.pack(">ii", *array.shape[1:])
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _find_or_fetch(folder, i, spec, dataset, allow_download):
    """FILES[i] in folder, gzipped or raw, downloaded when missing (and allowed) -> (its path, the MD5 it must have)."""
    gz, raw = folder / (FILES[i] + ".gz"), folder / FILES[i]
    for path, md5s in ((gz, spec["md5_gz"]), (raw, spec["md5_raw"])):
        if path.exists():
            if not path.is_file():  # a folder of that name: md5 and the reads would fail deep inside
                raise DataError(f"{path} is not a file: remove it, and put the original file there (or let the "
                                f"loader download it)")
            return path, md5s[i]
    # every file the loader needs, not only the first one missed: a user fetching by hand gets all four at once
    where = (f"{', '.join(f + '.gz' for f in FILES)}, each from any of {', '.join(spec['mirrors'])} (the folder's "
             f"address followed by the file's name)")
    if not allow_download:
        raise DataError(f"{gz} is missing (download is off): put the four original {dataset} files in {folder}: "
                        f"{where}{elsewhere(folder)}")
    errors = []
    with download_folder(folder):
        for mirror in spec["mirrors"]:
            try:
                download(mirror + FILES[i] + ".gz", gz, spec["md5_gz"][i])
                return gz, spec["md5_gz"][i]
            except (OSError, DataError) as e:  # URLError is an OSError
                if write_stopped(e):  # the disk, not the mirror: cli says it in one line
                    raise
                errors.append(f"{mirror}: {e}")
        raise DataError(f"{gz} is missing and could not be downloaded ({'; '.join(errors)}). Put the four original "
                        f"{dataset} files in {folder}: {where}{elsewhere(folder)}")


def load(data_dir="data", dataset="mnist", download=True, verify=True):
    """Return the dataset as numpy uint8 images [N, 28, 28] and int64 labels [N]."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset '{dataset}': choose one of {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    folder = Path(data_dir) / spec["folder"]
    if why := path_problem(folder / (FILES[0] + ".gz")):  # (a name too long: an OSError from deep inside)
        raise DataError(f"data_dir {data_dir}: {why}: pass another --data_dir")
    if blocked := next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None):
        raise DataError(f"{blocked} is a file, where the folder {folder} should be: move it, or pass another "
                        f"--data_dir")
    arrays = []  # in the order of FILES: train images, train labels, test images, test labels
    for i in range(4):
        # `download` here is load's flag; _find_or_fetch is what calls the module's download function
        path, expected_md5 = _find_or_fetch(folder, i, spec, dataset, download)
        if verify:
            found = md5(path)
            if found != expected_md5:
                fix = ("delete it and load again to re-download it" if download else
                       f"put the original there (download is off): {', '.join(f + '.gz' for f in FILES)}, each from "
                       f"any of {', '.join(spec['mirrors'])}")
                raise DataError(f"checksum mismatch for {path}: expected MD5 {expected_md5}, found {found}. The file "
                                f"is corrupt or not the original: {fix}")
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError, zlib.error) as e:  # (zlib.error: damaged data inside a valid gzip header)
            raise DataError(f"{path} is not a readable gzip file ({e}): delete it and load again") from None
        arrays.append(parse_idx(raw, path.name, COUNTS[i] if verify else None))
    train_x, train_y, test_x, test_y = arrays
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if x.shape[0] != y.shape[0] or x.shape[1:] != (28, 28):
            raise DataError(f"{dataset} {split} images {x.shape} and labels {y.shape} do not match")
    return {"train_x": train_x, "train_y": train_y.astype(np.int64), "test_x": test_x,
            "test_y": test_y.astype(np.int64)}
