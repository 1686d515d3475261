"""attrkit.assets: cache -> mirror -> download, checksums, atomic writes, clear errors, the command line."""
import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from attrkit.zoo import assets
from attrkit.zoo.assets import Asset, AssetError, AssetFile

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MIRROR = REPO.parent / "shared" / "data"


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    """A private cache, the mirror (CI sets ATTRKIT_MIRROR; locally default to ../shared/data), offline."""
    monkeypatch.setenv("ATTRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATTRKIT_MIRROR", os.environ.get("ATTRKIT_MIRROR") or str(DEFAULT_MIRROR))
    monkeypatch.setenv("ATTRKIT_OFFLINE", "1")
    monkeypatch.setenv("ATTRKIT_TIMEOUT", "5")
    return tmp_path / "cache"


@pytest.fixture
def mirror():
    m = assets.mirror_dir()
    if m is None or not (m / "SHA256SUMS").is_file():
        pytest.skip(f"no asset mirror at {m} (set ATTRKIT_MIRROR)")
    return m


def test_table_names_sources_and_licences():
    assert {"penguin", "swan", "oxford-pets-sample"} <= set(assets.names())
    for name in assets.names():
        a = assets.get(name)
        assert a.licence and a.source and a.description and a.files
        for f in a.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.size > 0
            assert f.urls and all(u.startswith("https://") for u in f.urls)
    pets = assets.get("oxford-pets-sample")
    assert pets.directory and len(pets.files) == 245
    names = [Path(f.path).name for f in pets.files]
    assert len(set(names)) == 245 and all(re.fullmatch(r"[A-Za-z_]+_\d+\.jpg", n) for n in names)
    assert sum(n[0].isupper() for n in names) == 120          # cats: capitalised original names


def test_unknown_asset_lists_the_known_ones():
    with pytest.raises(KeyError, match="penguin"):
        assets.path("no-such-asset")


def test_table_agrees_with_the_mirror_checksums(mirror):
    sums = dict(reversed(line.split()) for line in (mirror / "SHA256SUMS").read_text().splitlines() if line)
    for name in assets.names():
        for f in assets.get(name).files:
            assert sums[f.path] == f.sha256, (name, f.path)


def test_every_asset_resolves_from_the_mirror_into_the_cache(env, mirror):
    for name in assets.names():
        p = assets.path(name, progress=False)
        assert p.exists() and env in p.parents
        for f in assets.get(name).files:
            assert _sha(env / f.path) == f.sha256
    pets = assets.path("oxford-pets-sample")
    assert pets.is_dir() and len(list(pets.glob("*.jpg"))) == 245
    assert assets.path("penguin").name == "penguin.jpg"


def test_relative_mirror_is_resolved_from_the_cwd(monkeypatch, mirror):
    monkeypatch.chdir(mirror.parent)
    monkeypatch.setenv("ATTRKIT_MIRROR", mirror.name)
    assert _sha(assets.path("swan")) == assets.get("swan").files[0].sha256


def test_corrupted_cached_file_is_detected_and_replaced(mirror):
    p = assets.path("penguin")
    data = bytearray(p.read_bytes())
    data[1000] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum"):
        assert assets.path("penguin") == p
    assert _sha(p) == assets.get("penguin").files[0].sha256


def test_offline_without_mirror_raises_a_clear_error(monkeypatch, env):
    monkeypatch.delenv("ATTRKIT_MIRROR")
    with pytest.raises(AssetError) as e:
        assets.path("swan")
    msg = str(e.value)
    f = assets.get("swan").files[0]
    for needed in ("'swan'", f.urls[0], "ATTRKIT_OFFLINE", "ATTRKIT_MIRROR", str(env / f.path), f.sha256):
        assert needed in msg
    assert not (env / f.path).exists()


# -- downloads from a local server --------------------------------------------------------------------------------
PAYLOAD = bytes(range(256)) * 4096          # 1 MiB


@contextmanager
def local_server(mode):
    """An HTTP server on 127.0.0.1 only, on a free port, in a thread; stopped and joined on exit.
    mode: "ok" serves PAYLOAD, "drop" sends half of it then closes the connection, "wrong" serves other bytes."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 5                            # bounded: never wait on a client for long

        def do_GET(self):
            hits.append(self.path)
            body = PAYLOAD if mode != "wrong" else PAYLOAD[::-1]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if mode != "drop" else body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True       # "drop": the client sees the stream end early

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/blob.bin", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def fake_asset(monkeypatch):
    """Register an asset 'blob' whose URL is set per test; downloads allowed, no mirror."""
    monkeypatch.delenv("ATTRKIT_OFFLINE")
    monkeypatch.delenv("ATTRKIT_MIRROR")

    def make(url):
        f = AssetFile("test/blob.bin", hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD), (url,))
        monkeypatch.setattr(assets, "_ASSETS", {**assets._table(), "blob": Asset(
            "blob", "test payload", "none", "a local test server", "", (f,))})
        return f
    return make


def _leftovers(cache):
    return sorted(p.name for p in (cache / "test").iterdir()) if (cache / "test").exists() else []


def test_download_checks_and_installs(env, fake_asset):
    with local_server("ok") as (url, hits):
        fake_asset(url)
        p = assets.path("blob", progress=False)
    assert p == env / "test" / "blob.bin" and p.read_bytes() == PAYLOAD and len(hits) == 1
    assert _leftovers(env) == ["blob.bin"]


def test_interrupted_download_leaves_no_file_under_the_final_name(env, fake_asset):
    with local_server("drop") as (url, hits):
        fake_asset(url)
        with pytest.raises(AssetError) as e:
            assets.path("blob", progress=False)
    assert len(hits) == 2                      # one retry
    assert "'blob'" in str(e.value) and url in str(e.value) and "downloading it failed" in str(e.value)
    assert _leftovers(env) == []               # neither blob.bin nor a .part file


def test_download_with_the_wrong_checksum_is_rejected(env, fake_asset):
    with local_server("wrong") as (url, hits):
        fake_asset(url)
        with pytest.raises(AssetError, match="checksum mismatch"):
            assets.path("blob", progress=False)
    assert _leftovers(env) == []


def test_offline_never_downloads(env, fake_asset, monkeypatch):
    monkeypatch.setenv("ATTRKIT_OFFLINE", "1")
    with local_server("ok") as (url, hits):
        fake_asset(url)
        with pytest.raises(AssetError, match="ATTRKIT_OFFLINE"):
            assets.path("blob")
    assert hits == []


# -- command line -------------------------------------------------------------------------------------------------
def test_cli_list_and_fetch(capsys, env, mirror):
    assert assets.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in assets.names()) and "CC BY-SA 4.0" in out
    assert assets.main(["fetch", "penguin", "swan"]) == 0
    assert (env / "images" / "swan.jpg").is_file()
    assert assets.main(["fetch", "nope"]) == 1 and "unknown asset" in capsys.readouterr().err


def test_cli_module_entry_point(env, mirror):
    r = subprocess.run([sys.executable, "-m", "attrkit.assets", "fetch", "--all"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "ATTRKIT_CACHE": str(env)})
    assert r.returncode == 0, r.stderr
    assert "oxford-pets-sample: " in r.stdout and (env / "oxford-iiit-pet-sample" / "images").is_dir()
