"""Downloads against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import json
import socket
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sasrec.cli import main
from sasrec.data import download as dl
from sasrec.data import registry
from sasrec.data.dataset import read_sasrec_file
from sasrec.errors import SASRecError


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path / "www"`` on an ephemeral 127.0.0.1 port; yields (base_url, directory)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def amazon_json(num_users: int = 6, num_items: int = 6) -> bytes:
    """Every user reviews every item: all counts are >= 5, so the paper's filter keeps everything."""
    lines = [
        json.dumps({"reviewerID": f"U{u}", "asin": f"I{i}", "overall": 5.0, "unixReviewTime": 1000 + i})
        for u in range(num_users)
        for i in range(num_items)
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def pin(monkeypatch, name: str, url: str, data: bytes | None, **changes) -> None:
    """Point the registry's source of dataset ``name`` at ``url`` with the sha256 of ``data`` (None: not pinned)."""
    sha = hashlib.sha256(data).hexdigest() if data is not None else None
    fields = {"url": url, "sha256": sha, "size": None, "member": None, "raw_file": Path(url).name, **changes}
    source = registry.Source(**fields)
    monkeypatch.setitem(registry.DATASETS, name, dataclasses.replace(registry.DATASETS[name], source=source))


def test_success_with_pinned_checksum(server, tmp_path, monkeypatch, capsys):
    base, root = server
    data = amazon_json()
    (root / "reviews_Beauty.json.gz").write_bytes(data)
    pin(monkeypatch, "beauty", f"{base}/reviews_Beauty.json.gz", data, size=len(data))
    raw = dl.download("beauty", tmp_path / "raw", progress=False)
    assert raw == tmp_path / "raw" / "reviews_Beauty.json.gz"
    assert raw.read_bytes() == data
    assert "matches the pinned checksum" in capsys.readouterr().out
    assert [p.name for p in raw.parent.iterdir()] == [raw.name]  # no .part file left
    dl.download("beauty", tmp_path / "raw", progress=False)  # already there: no second download
    assert "already present" in capsys.readouterr().out


def test_zip_member_is_extracted_and_base_url_override(server, tmp_path, monkeypatch):
    base, root = server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "1::10::5::100\n")
        zf.writestr("ml-1m/README", "not this one")
    data = buffer.getvalue()
    (root / "ml-1m.zip").write_bytes(data)
    pin(
        monkeypatch,
        "ml-1m",
        "https://files.example.invalid/movielens/ml-1m.zip",
        data,
        member="ml-1m/ratings.dat",
        raw_file="ml-1m/ratings.dat",
    )
    raw = dl.download("ml-1m", tmp_path, base_url_override=base + "/", progress=False)
    assert raw == tmp_path / "ml-1m" / "ratings.dat"
    assert raw.read_text() == "1::10::5::100\n"


def test_checksum_mismatch_discards_the_file(server, tmp_path, monkeypatch):
    base, root = server
    (root / "steam_reviews.json.gz").write_bytes(b"tampered")
    pin(monkeypatch, "steam", f"{base}/steam_reviews.json.gz", b"original")
    with pytest.raises(SASRecError, match="sha256 mismatch: expected") as info:
        dl.download("steam", tmp_path / "raw", progress=False)
    assert f"{base}/steam_reviews.json.gz" in str(info.value)
    assert not (tmp_path / "raw").exists()  # nor the folder the download made for it


def test_missing_on_server_is_a_clear_error(server, tmp_path, monkeypatch):
    base, _root = server
    pin(monkeypatch, "games", f"{base}/reviews_Video_Games.json.gz", None)
    with pytest.raises(SASRecError, match="404"):
        dl.download("games", tmp_path, progress=False)


def test_unreachable_host_fails_fast_and_says_where_to_put_the_file(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/reviews_Beauty.json.gz"
    pin(monkeypatch, "beauty", url, None)
    start = time.monotonic()
    with pytest.raises(SASRecError) as info:
        dl.download("beauty", tmp_path / "raw", timeout=5, progress=False)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert url in message and "no internet access" in message
    assert str(tmp_path / "raw" / "reviews_Beauty.json.gz") in message


def test_unknown_dataset():
    with pytest.raises(SASRecError, match="unknown dataset 'netflix'"):
        dl.download("netflix", ".")


def test_sources_table():
    assert set(registry.with_source()) == {"ml-1m", "beauty", "games", "steam"}
    assert dl.get_source("ml-1m").member == "ml-1m/ratings.dat"
    for name in registry.with_source():
        assert dl.get_source(name).sha256 is None or len(dl.get_source(name).sha256) == 64


def test_run_download_then_preprocess(server, tmp_path, monkeypatch, capsys):
    base, root = server
    data = amazon_json()
    (root / "reviews_Beauty.json.gz").write_bytes(data)
    pin(monkeypatch, "beauty", "http://unused.invalid/reviews_Beauty.json.gz", data)
    assert (
        main(
            [
                "download",
                "beauty",
                "--raw-dir",
                str(tmp_path / "raw"),
                "--out",
                str(tmp_path / "data"),
                "--base-url",
                base,
                "--preprocess",
            ]
        )
        == 0
    )
    seqs = read_sasrec_file(tmp_path / "data" / "Beauty.txt")
    assert (seqs.num_users, seqs.num_items, len(seqs.items)) == (6, 6, 36)
    assert "6 users, 6 items, 36 interactions" in capsys.readouterr().out
