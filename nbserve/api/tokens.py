"""TorchServe 0.12's token authorization: three keys, a key file only its owner reads, expiry.

The management key opens the management API, the inference key the inference API, and the API
key the token API (``GET /token?type=management|inference`` on the management port), which
replaces one of the other two. The keys live in ``key_file.json``, in TorchServe's shape::

    {"management": {"key": "...", "expiration time": "2026-11-30T13:13:21.474875Z"},
     "inference": {"key": "...", "expiration time": "..."},
     "API": {"key": "..."}}

written with mode 0600 and removed when serving stops. The management and inference keys expire
after ``token_expiration_min`` minutes (60 by default); the API key does not. Where no token API
can replace them (Ray Serve's ingress), they do not expire: serving again makes new ones.
"""

from __future__ import annotations

import atexit
import hmac
import json
import os
import secrets
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from nbserve.files import write_private

#: The keys the token API can replace; each opens the API of the same name.
ROTATING = ("management", "inference")
API_KEY = "API"


class TokenAuthorization:
    """The keys of one server, and the file that hands them to its owner."""

    def __init__(self, key_file: str | os.PathLike | None, expiration_min: float | None = 60,
                 keys: dict[str, str] | None = None):
        """``key_file`` None: the keys are checked here and written nowhere (a process that
        was handed them). ``expiration_min`` None: they never expire. ``keys``: the keys to
        hold, made elsewhere; new ones otherwise."""
        self.key_file = Path(key_file).absolute() if key_file is not None else None
        self.expiration = timedelta(minutes=expiration_min) if expiration_min is not None else None
        self._keys: dict[str, str] = {API_KEY: _new_key()}
        self._expires: dict[str, datetime] = {}
        self._lock = threading.Lock()
        for kind in ROTATING:
            self._renew(kind)
        self._keys.update(keys or {})
        if self.key_file is not None:
            self._write()
            atexit.register(self.remove)

    @property
    def keys(self) -> dict[str, str]:
        """``{"management": ..., "inference": ..., "API": ...}``, as they are now."""
        return dict(self._keys)

    def allows(self, kind: str, authorization: str | None) -> bool:
        """Whether an ``Authorization: Bearer <key>`` header holds the live ``kind`` key."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        with self._lock:
            key, expires = self._keys[kind], self._expires.get(kind)
        if expires is not None and datetime.now(timezone.utc) >= expires:
            return False
        return hmac.compare_digest(token.strip().encode(), key.encode())

    def rotate(self, kind: str) -> dict:
        """A new ``kind`` key (management or inference), written to the key file; returns its
        entry as the key file has it."""
        with self._lock:
            self._renew(kind)
            self._write()
            return self._entry(kind)

    def remove(self) -> None:
        """Delete the key file (at shutdown): the keys die with the server."""
        if self.key_file is not None:
            self.key_file.unlink(missing_ok=True)

    def _renew(self, kind: str) -> None:
        self._keys[kind] = _new_key()
        if self.expiration is not None:
            self._expires[kind] = datetime.now(timezone.utc) + self.expiration

    def _entry(self, kind: str) -> dict:
        entry = {"key": self._keys[kind]}
        if kind in self._expires:
            entry["expiration time"] = self._expires[kind].isoformat().replace("+00:00", "Z")
        return entry

    def _write(self) -> None:
        """Write the key file whole, readable by its owner only, never through a link."""
        self.key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.key_file, json.dumps(
            {kind: self._entry(kind) for kind in (*ROTATING, API_KEY)}, indent=2))


def _new_key() -> str:
    # TorchServe's keys are 6 random bytes; 24 make them impossible to guess over HTTP.
    return secrets.token_urlsafe(24)
