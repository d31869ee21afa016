"""Writing outputs: never a file that looks finished unless it is; provenance for every output.

One mechanism for every command (``atomic_file``, ``atomic_folder``, ``write_json``,
``open_output``):

- A regular file (or a new path) is written to a hidden temporary file in the same folder and
  renamed over the target only when complete; an error or an interrupt removes the temporary.
- A symlink is written through: the file it points to is replaced, the link stays.
- A character device, FIFO or socket (``/dev/null``, ``/dev/stdout``, a named pipe) is written
  directly: a rename would replace the device node (as root) with a regular file.
- Final permissions come from the umask (0666/0777 masked), as a plain ``open()`` or ``mkdir`` would
  give, not the 0600/0700 of ``mkstemp``/``mkdtemp``; a file that is replaced keeps its mode.
- An OSError while writing (disk full, I/O error, permission) becomes one CaduceusError naming the
  path; a broken pipe stays a BrokenPipeError, which ``cli.py`` turns into the shell's exit 141.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shlex
import shutil
import stat
import sys
import uuid
from pathlib import Path
from typing import IO, Iterator

from ._version import __version__
from .errors import CaduceusError


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import, on the main thread (os.umask is process-wide)
_LIVE: set[Path] = set()  # temporaries being written now: removed on error, interrupt or signal


def is_special(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a character/block device, FIFO or socket (written directly, never renamed over)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def final_path(path: str | os.PathLike) -> Path:
    """The file that will really be written: symlinks followed (a dangling one to its target)."""
    return Path(os.path.realpath(path))


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any work) if ``path`` cannot be written; returns it as a Path."""
    path = Path(path)
    if is_special(path):
        if not os.access(path, os.W_OK):
            raise CaduceusError(f"{path}: not writable")
        return path
    target = final_path(path)
    folder = target.parent
    if target.is_dir():
        raise CaduceusError(f"{path}: is a folder; give a file name")
    if not folder.is_dir():
        raise CaduceusError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CaduceusError(f"{path}: folder {folder} is not writable")
    return path


def same_file(a: str | os.PathLike | None, b: str | os.PathLike | None) -> bool:
    """Whether two paths name the same existing file (through symlinks and hard links); '-' never does."""
    if a is None or b is None or str(a) == "-" or str(b) == "-":
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return final_path(a) == final_path(b)


INPUT_COMPANIONS = (".fai", ".gzi", ".tbi", ".csi")  # indexes htslib reads beside a FASTA, VCF or BCF


def refuse_overwriting_inputs(output: str | os.PathLike | None, *inputs: str | os.PathLike | None) -> None:
    """Raise before any work when ``output`` would replace one of ``inputs`` or an index beside one
    (its .fai, .gzi, .tbi or .csi, existing or to be built on first use). Every command that writes
    a file or folder calls this with every input it reads."""
    if output is None or str(output) == "-":
        return
    for src in inputs:
        if not isinstance(src, (str, os.PathLike)) or str(src) == "-":  # None, or data given in memory
            continue
        if same_file(src, output):
            raise CaduceusError(f"{output}: the output would overwrite the input {src}; choose another output name")
        for companion in (f"{src}{suffix}" for suffix in INPUT_COMPANIONS):
            if same_file(companion, output):
                raise CaduceusError(f"{output}: the output would overwrite {companion}, the index of the input "
                                    f"{src}; choose another output name")


def output_format(path: str | os.PathLike, fmt: str | None, suffixes: dict[str, str], *, stream: str) -> str:
    """The format of an output: ``fmt`` (``--format``, any case) when given, else the one the file
    name ends in (``suffixes``: ending -> format, the longest ending first); stdout ('-'), a device
    or a pipe get ``stream``. A file name that names no format is refused rather than guessed."""
    formats = list(dict.fromkeys(suffixes.values()))
    if fmt:
        if fmt.lower() not in formats:
            raise CaduceusError(f"--format must be one of {', '.join(formats)}, got {fmt!r}")
        return fmt.lower()
    if str(path) == "-" or is_special(path):
        return stream
    name = str(path).lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if name.endswith(suffix):
            return suffixes[suffix]
    raise CaduceusError(f"{path}: cannot tell the output format from the file name: end it in "
                        f"{', '.join(suffixes)}, or give --format")


def write_error(path: str | os.PathLike, error: OSError) -> CaduceusError:
    """One line for an OSError met while writing ``path``."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif error.errno == errno.EDQUOT:
        reason = "disk quota exceeded"
    return CaduceusError(f"{path}: cannot write: {reason}")


_OS_ERROR_TEXT = re.compile(r"os error (\d+)")  # how safetensors (Rust) reports the OSError under its own
_FULL_BYTES = 1 << 20  # a file system with less than this left is full for the purpose of a message


def _disk_full(path: str | os.PathLike) -> bool:
    try:
        fs = os.statvfs(final_path(path).parent)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < _FULL_BYTES


def reported_os_error(error: Exception, path: str | os.PathLike) -> OSError | None:
    """The OSError behind a library's own exception: safetensors says '(os error 28)'; torch.save
    says 'unexpected pos 576 vs 534' when the disk fills, so a full disk is recognised by looking."""
    if isinstance(error, OSError):
        return error
    match = _OS_ERROR_TEXT.search(str(error))
    if match:
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    if _disk_full(path):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn OSErrors raised inside (and a library's report of one, see :func:`reported_os_error`)
    into one CaduceusError naming ``path``; broken pipes and CaduceusErrors pass through."""
    try:
        yield
    except (BrokenPipeError, CaduceusError):
        raise
    except Exception as e:  # noqa: BLE001 - only an OSError, or a library's report of one, is turned
        os_error = reported_os_error(e, path)
        if os_error is None:
            raise
        raise write_error(path, os_error) from None


def _new_temporary(target: Path, suffix: str = "") -> Path:
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:10]}{suffix}.tmp"


def _remove(path: Path) -> None:
    _LIVE.discard(path)
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def remove_temporaries() -> None:
    """Remove every temporary being written now (for a signal handler that must exit at once)."""
    for path in list(_LIVE):
        _remove(path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield the path to write ``path``'s content to; it becomes ``path`` only on success.

    For a device, FIFO or socket the path itself is yielded and written in place. Otherwise a
    hidden temporary in the target's folder is renamed over the target (through symlinks) when the
    block ends without an error; on any exception, KeyboardInterrupt included, it is removed and
    the target is untouched. OSErrors become one-line CaduceusErrors.
    """
    check_writable(path)
    if is_special(path):
        with writing(path):
            yield Path(path)
        return
    target = final_path(path)
    tmp = _new_temporary(target, suffix)
    _LIVE.add(tmp)
    try:
        with writing(path):
            yield tmp
            if not tmp.exists():  # the writer produced nothing: an empty output
                tmp.touch()
            mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else 0o666 & ~_UMASK
            os.chmod(tmp, mode)
            os.replace(tmp, target)
    finally:
        if tmp in _LIVE:
            _remove(tmp)


@contextlib.contextmanager
def parquet_sink(output, schema) -> Iterator:
    """A function writing one pyarrow record batch to the Parquet file ``output``, committed when
    the block ends (atomic_file); ``output`` None: a function that drops the batch."""
    if output is None:
        yield lambda batch: None
        return
    import pyarrow.parquet as pq

    with atomic_file(output) as tmp:
        writer = pq.ParquetWriter(str(tmp), schema)
        try:
            yield writer.write_batch
        finally:
            writer.close()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``path``; it becomes ``path`` only on success.

    ``path`` must not exist yet, or be an empty folder (checked before any work, so call this
    first); with ``replace`` an existing folder is replaced as a whole once the new one is complete
    (a checkpoint written again, a continued run). On error the temporary folder and all it holds
    are removed. Everything in the finished folder gets the modes a plain ``open()``/``mkdir``
    would give (some writers make private 0600 temporaries).
    """
    target = Path(path)
    if target.exists() and not replace and not (target.is_dir() and not any(target.iterdir())):
        raise CaduceusError(f"{path}: already exists and is not an empty folder; give a new folder name")
    if target.exists() and not target.is_dir():
        raise CaduceusError(f"{path}: exists and is not a folder")
    parent = final_path(target).parent
    if not parent.is_dir():
        raise CaduceusError(f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CaduceusError(f"{path}: folder {parent} is not writable")
    tmp = _new_temporary(final_path(target))
    _LIVE.add(tmp)
    try:
        with writing(path):
            tmp.mkdir(mode=0o700)
            try:
                yield tmp
            except CaduceusError as e:  # name the folder the user asked for, not our temporary one
                raise CaduceusError(str(e).replace(str(tmp), str(path)), exit_code=e.exit_code) from None
            _plain_modes(tmp)
            _move_aside_and_replace(tmp, final_path(target))
            _LIVE.discard(tmp)
    finally:
        if tmp in _LIVE:
            _remove(tmp)


def _plain_modes(folder: Path) -> None:
    """``folder`` and everything in it with the modes of a plain open()/mkdir under the umask."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)


def _move_aside_and_replace(new: Path, target: Path) -> None:
    """Rename the folder ``new`` to ``target``; an existing ``target`` is moved aside first and
    removed after, so that ``target`` is never a half-written folder."""
    if not target.exists():
        os.replace(new, target)
        return
    old = _new_temporary(target, ".old")
    _LIVE.add(old)
    os.replace(target, old)
    os.replace(new, target)
    _remove(old)


@contextlib.contextmanager
def temporary_file(near: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A hidden scratch path beside ``near`` (not created), removed when the block ends, on error,
    interrupt or signal too (for intermediate files such as the text of a BCF being converted)."""
    tmp = _new_temporary(final_path(near), suffix)
    _LIVE.add(tmp)
    try:
        yield tmp
    finally:
        _remove(tmp)


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path`` atomically (newline-terminated)."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=indent, default=str)
        f.write("\n")


def _compressed_by_name(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith((".gz", ".bgz"))


@contextlib.contextmanager
def open_output(path: str | os.PathLike, mode: str = "w", *, compress: bool | None = None) -> Iterator[IO]:
    """A stream for ``path`` ('-' is stdout), committed atomically when the block ends.

    ``compress`` (default: the name ends in .gz or .bgz) writes BGZF, which gzip tools read and
    tabix can index. Text mode is UTF-8 with '\\n' line ends.
    """
    if compress is None:
        compress = _compressed_by_name(path)
    if str(path) == "-":
        if compress:
            raise CaduceusError("BGZF output needs -o FILE; for stdout pipe plain text into bgzip")
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        yield stream
        stream.flush()
        return
    with atomic_file(path) as tmp, open_file(tmp, mode, compress=compress) as stream:
        yield stream


@contextlib.contextmanager
def open_file(path: str | os.PathLike, mode: str = "w", *, compress: bool = False) -> Iterator[IO]:
    """A stream writing ``path`` itself (no temporary: for the temporary of an :func:`atomic_file`);
    BGZF with ``compress``. Text mode is UTF-8 with '\\n' line ends."""
    if compress:
        with contextlib.closing(_HtslibBgzf(path)) as raw:
            stream = raw if "b" in mode else io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            with stream:
                yield stream
    else:
        with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as stream:
            yield stream


def quiet_htslib() -> None:
    """Silence htslib's own stderr lines (``[E::...]``, ``[W::...]``) in both copies of it, pysam's
    and, once it is imported, cyvcf2's: errors are reported on one line by the code that meets them."""
    import pysam

    pysam.set_verbosity(0)
    cyvcf2 = sys.modules.get("cyvcf2.cyvcf2")  # silenced once loaded, by whoever loads it
    set_level = getattr(cyvcf2, "set_htslib_log_level", None)  # cyvcf2 >= 0.31
    if set_level is not None:
        set_level(0)


class _HtslibBgzf(io.RawIOBase):
    """htslib's BGZF writer (pysam's BGZFile) as a binary stream: blocks of at most 64 KiB and the
    empty EOF block, as bgzip writes them. pysam reports a failed write without its errno, so a full
    disk is recognised by looking (:func:`reported_os_error`)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        from pysam.libcbgzf import BGZFile

        quiet_htslib()
        self._path = path
        try:
            self._file = BGZFile(str(path), "wb")
        except OSError as e:
            raise self._failure(e) from None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            self._file.write(bytes(data))
        except OSError as e:
            raise self._failure(e) from None
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._file.close()
        except OSError as e:
            raise self._failure(e) from None
        finally:
            super().close()

    def _failure(self, error: OSError) -> OSError:
        if error.errno:
            return error
        return reported_os_error(RuntimeError(str(error)), self._path) or OSError(errno.EIO, os.strerror(errno.EIO))


def command_line() -> str:
    """The command line as the user typed it (for provenance)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "cli.py")):
        argv[0] = "caduceus"
    elif argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def provenance(model=None, **extra) -> dict[str, str]:
    """Model id/revision/hash, tool version and command line, plus any extra settings (as strings).

    Unknown values (a local folder has no revision) are left out rather than written as 'None'.
    """
    out = {"tool": "caduceus-cli", "tool_version": __version__, "command": command_line()}
    if model is not None:
        src = getattr(model, "source", {}) or {}
        for key, name in (("id", "model"), ("revision", "model_revision"), ("sha256", "model_sha256")):
            if src.get(key) is not None:
                out[name] = str(src[key])
        compute_dtype = getattr(model, "compute_dtype_name", lambda: None)()
        if compute_dtype is not None:
            out["compute_dtype"] = compute_dtype
    out.update({k: str(v) for k, v in extra.items() if v is not None})
    return out
