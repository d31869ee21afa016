"""Getting benchmark data onto this machine: Hugging Face dataset files and HTTP archives.

- Hugging Face files go through ``huggingface_hub`` into its normal cache (``HF_HUB_CACHE`` /
  ``HF_HOME``, read when called); with ``HF_HUB_OFFLINE=1`` only the cache is used.
- HTTP files are downloaded to ``<name>.part`` beside their target and resumed from where a
  previous attempt stopped (an HTTP Range request; a server that ignores it sends the whole file
  again), verified against their checksum, and only then renamed to the target. A file already in
  place is verified, never downloaded again.
- Archives (zip, tar, tar.gz) are unpacked into a hidden folder beside the target, renamed when
  complete, and refused when a member would land outside the target: absolute names, '..', links
  that point out of it, device files.

Progress goes to stderr.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from ...errors import CaduceusError
from ...io import atomic_folder
from ...progress import Progress
from ...runtime import env_flag, env_str

log = logging.getLogger("caduceus")

CHUNK = 1 << 20
TIMEOUT_S = 60


def _offline() -> bool:
    return env_flag("HF_HUB_OFFLINE")


def hf_cache_dir() -> str | None:
    """The Hugging Face hub cache as the environment says now (None: the library's default)."""
    if env_str("HF_HUB_CACHE"):
        return env_str("HF_HUB_CACHE")
    if env_str("HF_HOME"):
        return str(Path(env_str("HF_HOME")) / "hub")
    return None


def hf_dataset_file(repo: str, filename: str, revision: str | None = None) -> Path:
    """Local path of ``filename`` of the Hugging Face dataset ``repo`` (downloaded once, then cached)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = _offline()
    try:
        return Path(hf_hub_download(repo, filename, repo_type="dataset", revision=revision,
                                    cache_dir=hf_cache_dir(), local_files_only=offline))
    except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError: first)
        hint = ("HF_HUB_OFFLINE is set and the file is not in the local Hugging Face cache"
                if offline else "it could not be downloaded (no network?)")
        raise CaduceusError(f"{repo}/{filename}: {hint}; download it where there is network "
                            f"(`huggingface-cli download --repo-type dataset {repo} {filename}`) "
                            "or give a local copy with --data DIR") from None
    except EntryNotFoundError:
        raise CaduceusError(f"{repo}: the Hugging Face dataset has no file {filename}") from None
    except RepositoryNotFoundError:
        raise CaduceusError(f"{repo}: no such Hugging Face dataset (or it needs a login)") from None
    except OSError as e:
        raise CaduceusError(f"{repo}/{filename}: cannot be fetched ({e.__class__.__name__}: {e})") from None


def snapshot_revision(path: Path) -> str | None:
    """The commit of a Hugging Face cache snapshot that holds ``path`` (…/snapshots/<commit>/…)."""
    parts = Path(path).parts
    if "snapshots" in parts:
        index = parts.index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _check(path: Path, checksum: str | None, url: str) -> None:
    """Raise when ``path`` does not match ``checksum`` ('sha256:…' or 'md5:…')."""
    if not checksum:
        return
    algorithm, _, expected = checksum.partition(":")
    got = file_digest(path, algorithm)
    if got.lower() != expected.lower():
        raise CaduceusError(f"{url}: checksum mismatch ({algorithm} {got}, expected {expected}); the partial file "
                            "was removed, run the command again, or give a verified local copy with --data DIR")


def _open(url: str, offset: int):
    request = urllib.request.Request(url, headers={"User-Agent": "caduceus-cli"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 - URLs come from the registry


def http_download(url: str, target: str | os.PathLike, *, checksum: str | None = None,
                  progress: Callable[[int], None] | None = None) -> Path:
    """Download ``url`` to ``target`` (resuming a ``.part`` file left by an earlier attempt) and
    verify ``checksum``. A target already present is verified and kept."""
    target = Path(target)
    if target.is_file():
        _check(target, checksum, url)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: the partial file already holds every byte
            raise CaduceusError(f"{url}: the server answered HTTP {e.code} ({e.reason})") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CaduceusError(f"{url}: cannot be downloaded ({reason}); no network? give a local copy with --data DIR") from None
    else:
        with response:
            resumed = offset and response.status == 206
            if offset and not resumed:
                log.info("%s: the server does not resume downloads; starting again", url)
            start = offset if resumed else 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            shown = progress or Progress(f"downloading {target.name}", unit="MB", divisor=1e6)
            if isinstance(shown, Progress):
                shown.set_total(total)
                if start:
                    shown(start, resumed=True)
            try:
                with open(part, "ab" if resumed else "wb") as out:
                    while block := response.read(CHUNK):
                        out.write(block)
                        shown(len(block))
            except OSError as e:
                raise CaduceusError(f"{url}: download interrupted ({e}); run the command again to resume") from None
            finally:
                if isinstance(shown, Progress):
                    shown.close()
            if total is not None and part.stat().st_size != total:
                raise CaduceusError(f"{url}: download incomplete ({part.stat().st_size:,} of {total:,} bytes); "
                                    "run the command again to resume")
    try:
        _check(part, checksum, url)
    except CaduceusError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return target


def http_json(url: str) -> dict:
    """A small JSON document over HTTP (a checksum manifest)."""
    try:
        with _open(url, 0) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise CaduceusError(f"{url}: the server answered HTTP {e.code} ({e.reason})") from None
    except (urllib.error.URLError, OSError) as e:
        raise CaduceusError(f"{url}: cannot be downloaded ({getattr(e, 'reason', e)}); no network? "
                            "give a local copy with --data DIR") from None
    except ValueError:
        raise CaduceusError(f"{url}: not a JSON document") from None


def zenodo_checksum(record_api_url: str, filename: str) -> str:
    """The checksum ('md5:…') Zenodo publishes for ``filename`` of a record (its files API)."""
    doc = http_json(record_api_url)
    files = doc.get("files", doc.get("entries", []))
    if isinstance(files, dict):
        files = files.get("entries", list(files.values()))
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, dict) and entry.get("key", entry.get("filename")) == filename and entry.get("checksum"):
            return str(entry["checksum"])
    raise CaduceusError(f"{record_api_url}: lists no checksum for {filename}")


# -- archives -----------------------------------------------------------------------------------
def _safe_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise CaduceusError(f"{archive}: member {name!r} would be written outside the target folder; not extracted")
    return path


def _inside(link_dir: PurePosixPath, link_target: str) -> bool:
    """Whether a link in ``link_dir`` pointing at ``link_target`` stays inside the archive root."""
    if link_target.startswith("/"):
        return False
    depth = 0
    for part in (link_dir / link_target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in (".", ""):
            depth += 1
    return True


def _check_tar(archive: Path, tar: tarfile.TarFile) -> None:
    for member in tar.getmembers():
        path = _safe_name(member.name, archive)
        if member.issym() and not _inside(path.parent, member.linkname):
            raise CaduceusError(f"{archive}: link {member.name!r} points outside the target folder; not extracted")
        if member.islnk():
            _safe_name(member.linkname, archive)
        if member.isdev():
            raise CaduceusError(f"{archive}: member {member.name!r} is a device file; not extracted")


def _check_zip(archive: Path, z: zipfile.ZipFile) -> None:
    for info in z.infolist():
        path = _safe_name(info.filename, archive)
        if stat.S_ISLNK(info.external_attr >> 16) and not _inside(path.parent, z.read(info).decode("utf-8", "replace")):
            raise CaduceusError(f"{archive}: link {info.filename!r} points outside the target folder; not extracted")


def extract_archive(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Unpack ``archive`` (zip, tar, tar.gz) into the new folder ``target``, all or nothing."""
    archive, target = Path(archive), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(target) as tmp:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _check_zip(archive, z)
                for info in z.infolist():
                    if stat.S_ISLNK(info.external_attr >> 16):
                        dest = tmp / _safe_name(info.filename, archive)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        os.symlink(z.read(info).decode("utf-8"), dest)
                    else:
                        z.extract(info, tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                _check_tar(archive, tar)
                if hasattr(tarfile, "data_filter"):  # defence in depth where Python has it (3.10.12+)
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - older Pythons; every member was checked above
                    tar.extractall(tmp)
        else:
            raise CaduceusError(f"{archive}: not a zip or tar archive")
    return target
