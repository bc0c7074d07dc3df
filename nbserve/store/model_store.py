"""Where a registration's ``url`` points: an archive in the model store, a ``file://`` path, or
an ``http(s)://`` download into the store, each checked against ``allowed_urls``.

TorchServe's rules, with its fixes: a ``url`` with ``..`` is refused wherever it appears
(CVE-2024-35198: ``file:///store/../x.mar`` matched ``file:///store/.*``); every redirect is
checked against ``allowed_urls`` again; an archive already in the store is never overwritten.
Downloads are capped in size (``max_download_size``) and time (``download_timeout``), run on
threads of their own, and write nothing under the archive's name until they are whole. A URL
that cannot be fetched is a 400 that names the URL, not the network's error.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from nbserve.errors import ArchiveConflict, BadRequest, DownloadArchiveError, ModelNotFound

_CHUNK = 1 << 20
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_MAX_REDIRECTS = 5


class ModelStore:
    """The archives a server may register: its model store, and the URLs ``allowed_urls``
    admits."""

    def __init__(self, folder: str | None, allows_url: Callable[[str], bool], *,
                 max_download_size: int, download_timeout: float):
        self.folder = Path(folder).resolve() if folder else None
        self.allows_url = allows_url
        self.max_download_size = max_download_size
        self.download_timeout = download_timeout
        #: Downloads wait on the network: they get threads of their own, never the ones that
        #: load and unload models.
        self.downloads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nbserve-download")

    def resolve(self, url: str) -> Path:
        """The local archive ``url`` names, downloaded into the store if it is remote."""
        if not _SCHEME.match(url):
            return self._in_store(url)
        self._check_url(url)
        if url.startswith("file://"):
            path = Path(unquote(urlsplit(url).path))
            if not path.exists():
                raise ModelNotFound(f"Model not found at: {url}")
            return path
        return self._download(url)

    def _in_store(self, name: str) -> Path:
        if self.folder is None:
            raise ModelNotFound(f"Model not found at: {name} (no model store is set).")
        # Checked as written, not where links lead: a link in the store is the store's owner's
        # to make (TorchServe's own test tooling puts links there), a path out of it is not.
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise BadRequest(f"Relative path is not allowed in url: {name} is outside the "
                             "model store.")
        path = (self.folder / relative).resolve()
        if not path.exists():
            raise ModelNotFound(f"Model not found at: {name}")
        return path

    def _check_url(self, url: str) -> None:
        if ".." in unquote(url):
            raise BadRequest(f"Relative path is not allowed in url: {url}")
        if not self.allows_url(url):
            raise BadRequest(f"Given URL {url} does not match any allowed URL(s); "
                             "add it to allowed_urls in config.properties.")

    def _download(self, url: str) -> Path:
        if self.folder is None:
            raise BadRequest("Downloading an archive needs a model store (--model-store).")
        name = os.path.basename(urlsplit(url).path)
        if not name or name.startswith("."):
            raise BadRequest(f"The URL {url} names no archive file.")
        target = self.folder / name
        if target.exists():
            raise ArchiveConflict(f"Model file {name} already exists in the model store: "
                                  "register it by name, or remove it first.")
        partial = Path(tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self.folder)[1])
        try:
            self._fetch(url, partial)
            try:
                os.link(partial, target)  # fails, rather than overwrite, if it appeared meanwhile
            except FileExistsError:
                raise ArchiveConflict(f"Model file {name} already exists in the model store.") from None
        finally:
            partial.unlink(missing_ok=True)
        return target

    def _fetch(self, url: str, out_path: Path) -> None:
        deadline = time.monotonic() + self.download_timeout
        opener = urllib.request.build_opener(_CheckedRedirects(self._check_url))
        try:
            with opener.open(url, timeout=self.download_timeout) as response, \
                    open(out_path, "wb") as out:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_download_size:
                    raise self._too_large(url)
                size = 0
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._too_slow(url)
                    # Each read waits at most the time left, and returns whatever has come:
                    # a server that sends a byte a second cannot stretch the deadline.
                    _set_read_timeout(response, left)
                    try:
                        chunk = response.read1(_CHUNK)
                    except TimeoutError:
                        raise self._too_slow(url) from None
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_download_size:
                        raise self._too_large(url)
                    out.write(chunk)
        except urllib.error.HTTPError as e:
            raise DownloadArchiveError(f"Failed to download archive from: {url} "
                                       f"(the server answered {e.code}).") from None
        except (urllib.error.URLError, OSError, ValueError):
            # The network's own error (errno, resolver, addresses) stays out of the answer.
            raise DownloadArchiveError(f"Failed to download archive from: {url}") from None

    def _too_slow(self, url: str) -> DownloadArchiveError:
        return DownloadArchiveError(f"Downloading {url} took longer than download_timeout "
                                    f"({self.download_timeout:g} s).")

    def _too_large(self, url: str) -> DownloadArchiveError:
        return DownloadArchiveError(f"The archive at {url} is larger than max_download_size "
                                    f"({self.max_download_size} bytes).")

    def close(self) -> None:
        self.downloads.shutdown(wait=False, cancel_futures=True)


def _set_read_timeout(response, seconds: float) -> None:
    """Bound the next read of ``response``'s socket (http.client reads it through a file
    object that hides it)."""
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL that ``check`` admits, and only a few times."""

    max_redirections = _MAX_REDIRECTS

    def __init__(self, check: Callable[[str], None]):
        self.check = check

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)
