"""Benchmark data download code against local files only: a pre-filled Hugging Face cache (offline)
and an HTTP server on 127.0.0.1 serving archives (resumed downloads, checksum mismatches)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.pipelines.benchmark import download, sources
from caduceus_cli.pipelines.benchmark.registry import SUITES

COMMIT = "0123456789abcdef0123456789abcdef01234567"


# -- a pre-filled Hugging Face cache ---------------------------------------------------------------
def fill_hf_cache(hub: Path, repo: str, files: dict[str, str]) -> Path:
    """Lay ``files`` out as huggingface_hub's cache does for a dataset snapshot at COMMIT."""
    root = hub / f"datasets--{repo.replace('/', '--')}"
    for name, text in files.items():
        path = root / "snapshots" / COMMIT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    return root / "snapshots" / COMMIT


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


def test_nt_task_comes_from_the_hugging_face_cache_offline(offline_hub, tmp_path):
    fasta = ">a|1\nACGT\n>b|0\nTTTT\n"
    fill_hf_cache(offline_hub, sources.NT_REPO, {"H3/train.fna": fasta, "H3/test.fna": fasta})
    files = sources.locate(SUITES["nt-suite"].tasks["H3"], None, tmp_path / "cache")
    assert set(files.splits) == {"train", "test"}
    assert files.splits["test"].read_text() == fasta
    assert COMMIT in files.origin and sources.NT_REPO in files.origin
    assert not (tmp_path / "cache").exists()  # Hugging Face files live in the hub cache, not ours


def test_a_file_missing_from_the_offline_cache_is_one_line(offline_hub, tmp_path):
    fill_hf_cache(offline_hub, sources.NT_REPO, {"H3/test.fna": ">a|1\nACGT\n"})
    with pytest.raises(CaduceusError, match="HF_HUB_OFFLINE.*--data") as e:
        sources.locate(SUITES["nt-suite"].tasks["H3"], None, tmp_path / "cache")
    assert "H3/train.fna" in str(e.value) and "\n" not in str(e.value)


def test_hf_home_locates_the_cache_too(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fill_hf_cache(tmp_path / "home" / "hub", sources.NT_REPO, {"H4/train.fna": ">a|1\nACGT\n", "H4/test.fna": ">b|0\nAC\n"})
    files = sources.locate(SUITES["nt-suite"].tasks["H4"], None, tmp_path / "cache")
    assert files.splits["train"].read_text() == ">a|1\nACGT\n"


def test_eqtl_table_from_the_cache(offline_hub, tmp_path):
    fill_hf_cache(offline_hub, sources.EQTL_REPO, {sources.EQTL_FILE: "CHROM,POS\n"})
    files = sources.locate(SUITES["vep-eqtl"].tasks["eqtl_0-30kbp"], None, tmp_path / "cache")
    assert files.splits["all"].name == "All_Tissues.csv" and COMMIT in files.origin


# -- a local HTTP server -------------------------------------------------------------------------
class Server:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1, honouring Range unless told not to."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.honour_range = True
        self.cut_after: int | None = None  # close the connection after this many body bytes
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = server.files.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                start = int(wanted.split("=")[1].split("-")[0]) if wanted and server.honour_range else 0
                if start >= len(body) and start:
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cut_after is not None:
                    payload = payload[:server.cut_after]
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def zip_bytes(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_download_verifies_and_then_never_downloads_again(server, tmp_path):
    data = bytes(range(256)) * 4000
    server.files["/a.bin"] = data
    target = download.http_download(f"{server.url}/a.bin", tmp_path / "a.bin", checksum=sha256(data))
    assert target.read_bytes() == data and len(server.ranges) == 1
    download.http_download(f"{server.url}/a.bin", tmp_path / "a.bin", checksum=sha256(data))
    assert len(server.ranges) == 1  # present and verified: nothing fetched


def test_a_partial_download_resumes_with_a_range_request(server, tmp_path):
    data = b"ACGT" * 100_000
    server.files["/big.zip"] = data
    (tmp_path / "big.zip.part").write_bytes(data[:123_456])
    download.http_download(f"{server.url}/big.zip", tmp_path / "big.zip", checksum=sha256(data))
    assert server.ranges == ["bytes=123456-"]
    assert (tmp_path / "big.zip").read_bytes() == data and not (tmp_path / "big.zip.part").exists()


def test_an_interrupted_download_resumes_on_the_next_call(server, tmp_path):
    data = b"0123456789" * 50_000
    server.files["/x.tar.gz"] = data
    server.cut_after = 200_000
    with pytest.raises(CaduceusError, match="run the command again to resume"):
        download.http_download(f"{server.url}/x.tar.gz", tmp_path / "x.tar.gz", checksum=sha256(data))
    assert (tmp_path / "x.tar.gz.part").stat().st_size == 200_000 and not (tmp_path / "x.tar.gz").exists()
    server.cut_after = None
    download.http_download(f"{server.url}/x.tar.gz", tmp_path / "x.tar.gz", checksum=sha256(data))
    assert server.ranges[-1] == "bytes=200000-" and (tmp_path / "x.tar.gz").read_bytes() == data


def test_a_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    data = b"GATTACA" * 10_000
    server.files["/f"] = data
    server.honour_range = False
    (tmp_path / "f.part").write_bytes(b"garbage that is not the start of the file")
    download.http_download(f"{server.url}/f", tmp_path / "f", checksum=sha256(data))
    assert (tmp_path / "f").read_bytes() == data


def test_checksum_mismatch_removes_the_download_and_says_so(server, tmp_path):
    server.files["/a.zip"] = b"not what was published"
    wrong = "sha256:" + "0" * 64
    with pytest.raises(CaduceusError, match="checksum mismatch") as e:
        download.http_download(f"{server.url}/a.zip", tmp_path / "a.zip", checksum=wrong)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()


def test_a_corrupt_file_in_the_cache_is_refused(server, tmp_path):
    (tmp_path / "a.zip").write_bytes(b"tampered")
    with pytest.raises(CaduceusError, match="checksum mismatch"):
        download.http_download(f"{server.url}/a.zip", tmp_path / "a.zip", checksum="md5:" + "1" * 32)


def test_http_errors_are_one_line(server, tmp_path):
    with pytest.raises(CaduceusError, match="HTTP 404"):
        download.http_download(f"{server.url}/missing.zip", tmp_path / "m.zip")
    with pytest.raises(CaduceusError, match="cannot be downloaded"):
        download.http_download("http://127.0.0.1:9/nothing.zip", tmp_path / "n.zip")


def test_genomic_benchmarks_archive_from_zenodo_with_its_md5(server, tmp_path, monkeypatch):
    """The Genomic Benchmarks path end to end: checksum from the record's API, archive, unpacking."""
    task = SUITES["genomic-benchmarks"].tasks["human_nontata_promoters"]
    archive = zip_bytes({f"{task.name}/train/positive/1.txt": "ACGT", f"{task.name}/train/negative/2.txt": "TTTT",
                         f"{task.name}/test/positive/3.txt": "GGGG", f"{task.name}/test/negative/4.txt": "CCCC"})
    md5 = hashlib.md5(archive).hexdigest()
    server.files[f"/records/1/files/{task.name}_v0.zip"] = archive
    server.files["/api/records/1"] = json.dumps(
        {"files": [{"key": f"{task.name}_v0.zip", "checksum": f"md5:{md5}", "size": len(archive)}]}).encode()
    monkeypatch.setattr(sources, "GB_RECORD", f"{server.url}/records/1")
    monkeypatch.setattr(sources, "GB_RECORD_API", f"{server.url}/api/records/1")
    files = sources.locate(task, None, tmp_path / "cache")
    assert files.layout == "gb-sequences"
    assert (files.splits["test"] / "positive" / "3.txt").read_text() == "GGGG"
    served = len(server.ranges)
    sources.locate(task, None, tmp_path / "cache")
    assert len(server.ranges) == served  # unpacked data present: nothing downloaded


def test_zenodo_checksum_mismatch_is_refused(server, tmp_path, monkeypatch):
    task = SUITES["genomic-benchmarks"].tasks["human_ocr_ensembl"]
    server.files[f"/records/1/files/{task.name}_v0.zip"] = zip_bytes({"x": "y"})
    server.files["/api/records/1"] = json.dumps(
        {"files": [{"key": f"{task.name}_v0.zip", "checksum": "md5:" + "f" * 32}]}).encode()
    monkeypatch.setattr(sources, "GB_RECORD", f"{server.url}/records/1")
    monkeypatch.setattr(sources, "GB_RECORD_API", f"{server.url}/api/records/1")
    with pytest.raises(CaduceusError, match="checksum mismatch"):
        sources.locate(task, None, tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*_v0"))


def test_gue_archive_checksum_is_recorded_then_checked(server, tmp_path, monkeypatch):
    task = SUITES["gue"].tasks["tf_0"]
    archive = zip_bytes({f"GUE/tf/0/{split}.csv": "sequence,label\nACGT,1\nTTTT,0\n" for split in ("train", "dev", "test")})
    server.files["/GUE.zip"] = archive
    monkeypatch.setattr(sources, "GUE_URL", f"{server.url}/GUE.zip")
    files = sources.locate(task, None, tmp_path / "cache")
    assert set(files.splits) == {"train", "valid", "test"}
    recorded = (tmp_path / "cache" / "gue" / "GUE.zip.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(archive).hexdigest()


# -- archives stay inside their folder -----------------------------------------------------------
def test_archive_members_outside_the_target_are_refused(tmp_path):
    for name in ("../evil.txt", "/etc/evil.txt", "a/../../evil.txt"):
        archive = tmp_path / "bad.zip"
        archive.write_bytes(zip_bytes({"ok.txt": "x", name: "y"}))
        with pytest.raises(CaduceusError, match="outside the target folder"):
            download.extract_archive(archive, tmp_path / "out")
        assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_links_out_of_a_tar_are_refused(tmp_path):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("data/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
        tar.addfile(link)
    with pytest.raises(CaduceusError, match="points outside"):
        download.extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_good_tar_unpacks_with_its_inner_links(tmp_path):
    archive = tmp_path / "good.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"ACGT\n"
        member = tarfile.TarInfo("task/test.csv")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
        link = tarfile.TarInfo("task/latest.csv")
        link.type, link.linkname = tarfile.SYMTYPE, "test.csv"
        tar.addfile(link)
    out = download.extract_archive(archive, tmp_path / "out")
    assert (out / "task" / "latest.csv").read_text() == "ACGT\n"
