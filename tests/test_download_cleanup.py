"""A failed download leaves nothing it created: no partial file, no useless archive, no empty folder."""

from __future__ import annotations

import dataclasses
import io
import urllib.request
import zipfile
from pathlib import Path

import pytest

from sasrec.cli import main
from sasrec.data import download as dl
from sasrec.data import registry
from sasrec.errors import SASRecError


def everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


class FakeResponse(io.BytesIO):
    """What urlopen returns, serving ``data`` and then failing if ``fail_after`` is set."""

    def __init__(self, data: bytes, fail_after: bool = False):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data) * (2 if fail_after else 1))}
        self.fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        block = super().read(size)
        if not block and self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return block


def serve(monkeypatch, name: str, data: bytes | Exception, fail_after: bool = False, **changes) -> None:
    """Point dataset ``name`` at a fake URL whose fetch answers ``data`` (or raises it)."""
    fields = {"url": "https://example.invalid/raw.json.gz", "sha256": None, "size": None, "member": None}
    fields |= {"raw_file": Path(fields["url"]).name, **changes}
    source = registry.Source(**fields)
    monkeypatch.setitem(registry.DATASETS, name, dataclasses.replace(registry.DATASETS[name], source=source))

    def urlopen(url, timeout=None):
        if isinstance(data, Exception):
            raise data
        return FakeResponse(data, fail_after)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_cli_download_without_network_leaves_no_folder(tmp_path, monkeypatch, capsys):
    serve(monkeypatch, "beauty", urllib.error.URLError("Name or service not known"))
    monkeypatch.chdir(tmp_path)
    assert main(["download", "beauty"]) == 2  # into the default data/raw
    assert "could not download https://example.invalid/raw.json.gz" in capsys.readouterr().err
    assert everything(tmp_path) == []


def test_connection_lost_mid_transfer_leaves_no_partial_file(tmp_path, monkeypatch):
    serve(monkeypatch, "beauty", b"x" * 5000, fail_after=True)
    with pytest.raises(SASRecError, match="connection reset"):
        dl.download("beauty", tmp_path / "a" / "b", progress=False)
    assert everything(tmp_path) == []


def test_existing_folders_and_files_are_kept(tmp_path, monkeypatch):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "other.txt").write_text("mine")
    serve(monkeypatch, "beauty", b"tampered", sha256="0" * 64)
    with pytest.raises(SASRecError, match="sha256 mismatch"):
        dl.download("beauty", tmp_path / "raw", progress=False)
    assert everything(tmp_path) == ["raw", "raw/other.txt"]
    (tmp_path / "raw" / "other.txt").unlink()
    with pytest.raises(SASRecError, match="sha256 mismatch"):
        dl.download("beauty", tmp_path / "raw", progress=False)
    assert everything(tmp_path) == ["raw"]  # there before this run: not this run's to remove


def test_archive_without_its_member_is_discarded(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ml-1m/README", "no ratings here")
    serve(
        monkeypatch,
        "ml-1m",
        buffer.getvalue(),
        url="https://example.invalid/ml-1m.zip",
        member="ml-1m/ratings.dat",
        raw_file="ml-1m/ratings.dat",
    )
    with pytest.raises(SASRecError, match="has no member 'ml-1m/ratings.dat'"):
        dl.download("ml-1m", tmp_path / "data" / "raw", progress=False)
    assert everything(tmp_path) == []
