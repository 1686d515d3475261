"""Named data assets (photos, a small dataset) fetched by URL and checked by sha256.

``path(name)`` looks in three places, in this order:

1. the cache, ``$ATTRKIT_CACHE`` (default ``~/.cache/attrkit``); a cached file whose checksum no longer
   matches is reported and replaced;
2. the mirror, ``$ATTRKIT_MIRROR`` (a directory laid out like the cache, e.g. a shared read-only copy;
   a relative path is resolved from the current directory); files are copied into the cache and checked;
3. the asset's public URL(s): a download with a progress bar into a temporary file, a checksum check, then an
   atomic rename, so a half-written file never sits under the final name; each URL is tried twice.

With ``ATTRKIT_OFFLINE=1`` step 3 is skipped. When nothing works, :class:`AssetError` says which asset and file,
which URL, and where to put a copy by hand.

The table of assets (URLs, sha256, sources, licences) is ``attrkit/assets.json``, shipped with the package;
``data/ASSETS.md`` says where each file comes from and under which licence.

Example::

    >>> from attrkit import assets
    >>> assets.names()[:3]
    ['penguin', 'swan', 'oxford-pets-sample']
    >>> from PIL import Image
    >>> img = Image.open(assets.path("penguin"))          # doctest: +SKIP
    >>> pets_dir = assets.path("oxford-pets-sample")      # a directory of 245 JPEGs   # doctest: +SKIP

Command line: ``python -m attrkit.assets list | fetch NAME... | fetch --all``.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Asset", "AssetError", "names", "get", "path", "cache_dir", "mirror_dir", "offline", "main"]

_MANIFEST_CANDIDATES = (Path(__file__).resolve().parent / "assets.json",)
_CHUNK = 1 << 16


class AssetError(RuntimeError):
    """An asset could not be found in the cache or the mirror, nor downloaded and verified."""


@dataclass(frozen=True)
class AssetFile:
    path: str            # relative to the cache (and to the mirror): the same layout in both
    sha256: str
    size: int
    urls: tuple[str, ...]


@dataclass(frozen=True)
class Asset:
    """One named asset: a single file, or a directory of files (``directory`` set)."""
    name: str
    description: str
    licence: str
    source: str
    page: str
    files: tuple[AssetFile, ...]
    directory: str | None = None

    @property
    def relpath(self) -> str:
        """What :func:`path` returns, relative to the cache."""
        return self.directory or self.files[0].path

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


# -- configuration ---------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """``$ATTRKIT_CACHE``, default ``~/.cache/attrkit`` (created on first use)."""
    return Path(os.environ.get("ATTRKIT_CACHE") or "~/.cache/attrkit").expanduser().absolute()


def mirror_dir() -> Path | None:
    """``$ATTRKIT_MIRROR`` resolved from the current directory, or None when unset."""
    m = os.environ.get("ATTRKIT_MIRROR")
    return Path(m).expanduser().resolve() if m else None


def offline() -> bool:
    """True when ``$ATTRKIT_OFFLINE`` is set to a true value (1, true, yes, on): never touch the network."""
    return os.environ.get("ATTRKIT_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _timeout() -> float:
    return float(os.environ.get("ATTRKIT_TIMEOUT", "30"))


# -- the table of assets ---------------------------------------------------------------------------------------
_ASSETS: dict[str, Asset] | None = None


def _table() -> dict[str, Asset]:
    global _ASSETS
    if _ASSETS is None:
        manifest = next((p for p in _MANIFEST_CANDIDATES if p.is_file()), None)
        if manifest is None:
            raise AssetError(f"the asset table is missing; looked for {[str(p) for p in _MANIFEST_CANDIDATES]}")
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        _ASSETS = {name: Asset(name=name, description=a["description"], licence=a["licence"], source=a["source"],
                               page=a.get("page", ""), directory=a.get("directory"),
                               files=tuple(AssetFile(f["path"], f["sha256"], f["size"], tuple(f["urls"]))
                                           for f in a["files"]))
                   for name, a in raw.items()}
    return _ASSETS


def names() -> list[str]:
    """The names of all known assets."""
    return list(_table())


def get(name: str) -> Asset:
    """The :class:`Asset` called ``name`` (its files, URLs, source and licence)."""
    try:
        return _table()[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(names())}") from None


# -- resolution ------------------------------------------------------------------------------------------------
_verified: dict[Path, tuple[int, int]] = {}   # path -> (size, mtime_ns) of a file already checked in this process


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_good(p: Path, f: AssetFile) -> bool:
    st = p.stat()
    if _verified.get(p) == (st.st_size, st.st_mtime_ns):
        return True
    if st.st_size == f.size and _sha256(p) == f.sha256:
        _verified[p] = (st.st_size, st.st_mtime_ns)
        return True
    return False


def _tmp_beside(dest: Path):
    dest.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False)


def _install(tmp: Path, dest: Path, f: AssetFile, origin: str) -> None:
    """Check ``tmp`` and rename it to ``dest`` (atomic on one file system); remove it if the check fails."""
    got = _sha256(tmp)
    if got != f.sha256:
        tmp.unlink(missing_ok=True)
        raise AssetError(f"checksum mismatch for {f.path} from {origin}: expected sha256 {f.sha256}, got {got}")
    os.chmod(tmp, 0o644)                      # temporary files are created 0600
    os.replace(tmp, dest)


def _from_mirror(src: Path, dest: Path, f: AssetFile) -> None:
    out = _tmp_beside(dest)
    try:
        with out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, _CHUNK)
        _install(Path(out.name), dest, f, f"the mirror ({src})")
    except BaseException:
        Path(out.name).unlink(missing_ok=True)
        raise


def _download(url: str, dest: Path, f: AssetFile, bar) -> None:
    out = _tmp_beside(dest)
    tmp, done = Path(out.name), 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "attrkit"})
        with out, urllib.request.urlopen(req, timeout=_timeout()) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
        _install(tmp, dest, f, url)
    except BaseException:
        bar.update(-done)
        tmp.unlink(missing_ok=True)
        raise


def _help(asset: Asset, missing: list[AssetFile], why: str, errors: tuple[str, ...] = ()) -> str:
    f, cache, mirror = missing[0], cache_dir(), mirror_dir()
    more = f" (and {len(missing) - 1} more file(s) of this asset)" if len(missing) > 1 else ""
    where = f"nor in the mirror {mirror}" if mirror else "and no mirror is set (ATTRKIT_MIRROR)"
    return "\n".join([
        f"asset {asset.name!r}: {f.path}{more} is not in the cache {cache} {where}; {why}.",
        f"  URL: {f.urls[0]}", f"  expected sha256: {f.sha256}", *(f"  error: {e}" for e in errors),
        f"To seed it by hand, fetch it where there is a network (`python -m attrkit.assets fetch {asset.name}`, "
        f"or download the URL) and then either",
        f"  - copy it to {cache / f.path}, or",
        f"  - put it at <dir>/{f.path} and set ATTRKIT_MIRROR=<dir>."])


def path(name: str, *, progress: bool = True) -> Path:
    """Local path of asset ``name`` (a file, or a directory for directory assets), fetching it if needed.

    Example::

        >>> from attrkit.assets import path
        >>> path("swan").name                                 # doctest: +SKIP
        'swan.jpg'
    """
    asset, cache, mirror = get(name), cache_dir(), mirror_dir()
    todo = []
    for f in asset.files:
        dest = cache / f.path
        if dest.is_file():
            if _is_good(dest, f):
                continue
            warnings.warn(f"cached {dest} of asset {name!r} fails its checksum; replacing it", stacklevel=2)
            dest.unlink()
        src = mirror / f.path if mirror else None
        if src is not None and src.is_file():
            try:
                _from_mirror(src, dest, f)
                continue
            except AssetError as e:
                warnings.warn(f"ignoring the mirror's copy: {e}", stacklevel=2)
        todo.append(f)
    if todo:
        _fetch(asset, todo, progress)
    return cache / asset.relpath


def _fetch(asset: Asset, todo: list[AssetFile], progress: bool) -> None:
    if offline():
        raise AssetError(_help(asset, todo, "ATTRKIT_OFFLINE is set, so it was not downloaded"))
    from tqdm.auto import tqdm

    cache = cache_dir()
    with tqdm(total=sum(f.size for f in todo), unit="B", unit_scale=True, unit_divisor=1024,
              desc=asset.name, disable=not progress) as bar:
        for i, f in enumerate(todo):
            errors = _download_any(f, cache / f.path, bar)
            if errors:
                raise AssetError(_help(asset, todo[i:], "downloading it failed", tuple(errors)))


def _download_any(f: AssetFile, dest: Path, bar) -> list[str]:
    """Try each URL of ``f`` twice (one retry); return [] on success, else the errors."""
    errors = []
    for url in f.urls:
        for _attempt in range(2):
            try:
                _download(url, dest, f, bar)
                return []
            except (OSError, http.client.HTTPException, AssetError) as e:  # URLError, timeouts, dropped connections
                errors.append(f"{url}: {type(e).__name__}: {e}")
    return errors


# -- command line ----------------------------------------------------------------------------------------------
def _state(asset: Asset) -> str:
    cache, mirror = cache_dir(), mirror_dir()
    n_cached = sum((cache / f.path).is_file() for f in asset.files)
    n_mirror = sum((mirror / f.path).is_file() for f in asset.files) if mirror else 0
    return f"cached {n_cached}/{len(asset.files)}" + (f", mirror {n_mirror}/{len(asset.files)}" if mirror else "")


def main(argv: list[str] | None = None) -> int:
    """``python -m attrkit.assets list | fetch NAME... | fetch --all``."""
    ap = argparse.ArgumentParser(prog="python -m attrkit.assets", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the assets, their sources, licences and local state")
    fetch = sub.add_parser("fetch", help="fetch assets into the cache")
    fetch.add_argument("names", nargs="*", metavar="NAME")
    fetch.add_argument("--all", action="store_true", help="fetch every asset")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        print(f"cache: {cache_dir()}   mirror: {mirror_dir() or '(unset)'}   offline: {offline()}\n")
        for a in _table().values():
            print(f"{a.name}  ({len(a.files)} file(s), {a.size / 2**20:.1f} MiB; {_state(a)})\n"
                  f"  {a.description}\n  source:  {a.source}\n  licence: {a.licence}\n  page:    {a.page}\n")
        return 0
    wanted = names() if args.all else args.names
    if not wanted:
        ap.error("fetch needs NAME... or --all")
    status = 0
    for n in wanted:
        try:
            print(f"{n}: {path(n)}")
        except (AssetError, KeyError) as e:
            print(f"error: {e.args[0]}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
