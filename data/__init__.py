"""Data sources. Each loader raises DataError with one sentence that says what to do.

The helpers below are the loaders' shared download: a file is fetched whole to a temporary name and kept only
if its checksum is the published one (mnist.py: MD5, the originals' own; truthfulqa.py: SHA-256), into a folder that
a failed download does not leave behind.
"""
import contextlib
import errno
import hashlib
import http.client
import os
import sys
import urllib.request
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two downloads into one folder at once are not kept apart there
    fcntl = None


class DataError(Exception):
    """Missing, corrupt or wrong-format data; the message names the file and the fix."""


def file_hash(path, algorithm):
    """The hex digest of a file ("md5", "sha256", ...), read a MiB at a time."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_problem(path):
    """Why the OS cannot even look `path` up (a name too long, a folder we may not read, a loop of links), or None
    (it exists, or does not): checked first, so that it is one line, not an OSError from deep inside. (Path.exists
    raises it on Python < 3.12 and says False on later ones, where the mkdir or open after it raised it.)"""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # (a path inside a file: said by the checks that follow)
        return None
    except OSError as e:
        return e.strerror or str(e)
    return None


# the errors of a write that the file system or the user's limits stopped, not the data, a mirror or the code: a
# command says each in one line naming the file (train.cli), and a download says it after one mirror (another fills
# the same disk). A read-only file system's is no PermissionError (EROFS, not EACCES)
WRITE_STOPPED = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                 errno.EFBIG: "file too large", errno.EROFS: "read-only file system"}


def write_stopped(e):
    """Whether `e` is an error of WRITE_STOPPED (an OSError whose errno is one of them)."""
    return isinstance(e, OSError) and e.errno in WRITE_STOPPED


def naming(e, path):
    """The OSError `e` of a write, naming `path`: a write's own error (a full disk's, a quota's) names no file, and
    one of a temporary file names that, so a command's one line said only "no space left on the device"."""
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(path))


def lock_file(fd, *, wait, shared=False):
    """An advisory lock (flock) on the open file or folder `fd`, exclusive or `shared`, dropped by the OS when its
    holder exits, killed or not -> True once held; False if another process holds it (exclusively, for a shared one)
    and `wait` is False; None where there are no file locks (Windows; a file system without them, e.g. some NFS
    mounts), and the caller goes on unlocked."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK and kin: no locks on this file system
        return None
    return True


@contextlib.contextmanager
def folder_locked(folder):
    """An exclusive lock on `folder` for the block, waited for: two commands downloading into one data folder take
    turns. (None to take, e.g. on Windows or a file system without locks: the block runs unlocked.)"""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # (the download's own open says what is wrong)
        fd = None
    try:
        if fd is not None and lock_file(fd, wait=False) is False:
            print(f"note: another command is downloading into {folder}: waiting for it", file=sys.stderr, flush=True)
            lock_file(fd, wait=True)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def download(url, dest, expected, algorithm="md5"):
    """Fetch url to dest atomically, keeping it only if its checksum (`algorithm`'s hex digest) is `expected`.
    Commands fetching into the same folder take turns (folder_locked): two at once shared the temporary NAME.part,
    each emptying or deleting the other's, and both failed. One that waited finds the file there and fetches nothing
    (the loader checks its checksum, as any file's)."""
    with folder_locked(dest.parent):
        if not dest.is_file():
            _fetch(url, dest, expected, algorithm)


def _fetch(url, dest, expected, algorithm):
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        found = file_hash(tmp, algorithm)
        if found != expected:
            raise DataError(f"download of {url} has {algorithm.upper()} {found}, expected {expected}")
        os.replace(tmp, dest)
    except http.client.HTTPException as e:  # a transfer cut short (IncompleteRead) is not an OSError
        raise DataError(f"download of {url} broke off ({type(e).__name__}: {e})") from None
    except OSError as e:
        if not write_stopped(e):  # (URLError, a refused connection: the caller tries another mirror)
            raise
        # a full disk, named where the file goes: not a mirror's failure (another mirror fills it too), nor a file to
        # put there by hand, as the loaders' "could not be downloaded" said
        raise naming(e, dest) from None
    finally:
        # a failed or cut transfer leaves no .part behind (its folder can then go). A read-only disk says EROFS even
        # for a file that is not there: the download's own error is the one to raise
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def download_folder(folder):
    """Make `folder` (and its missing parents) for a download; if the block fails (OSError, DataError), remove those of
    them that are still empty: a failed download leaves no empty folders behind (a folder the user made stays)."""
    created = [d for d in (folder, *folder.parents) if not d.exists()]  # deepest first, the order to remove them in
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield
    except (OSError, DataError):
        for d in created:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise


def elsewhere(folder):
    """A hint when a relative data_dir missed only because of the working directory: the project's own data/
    folder has the files (the default data_dir 'data' is relative to where the command runs)."""
    root = Path(__file__).resolve().parent.parent
    in_project = root / folder  # where the relative folder would be, run from the project root
    if folder.is_absolute() or in_project.resolve() == folder.resolve():  # the working directory is not the cause
        return ""
    if not in_project.is_dir() or not any(in_project.iterdir()):  # nor does the project hold them there
        return ""
    return f". The project's {root / folder} has them: run from {root}, or pass --data_dir={root / folder.parent}"
