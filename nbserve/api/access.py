"""Who may call an API, checked before any handler runs: the Host a request names, the page it
comes from, and the key it holds.

- **Host.** A server bound to loopback answers only Host names that mean this machine (loopback
  addresses, ``local_hostnames``), as jupyter-server does, so a web page cannot reach it by DNS
  rebinding. ``allow_remote_access=true`` turns this off.
- **Origin.** A browser names the page that sent a request. One from another origin is refused
  with 403 before anything runs, unless ``cors_allowed_origin`` admits it (TorchServe's CORS
  settings); CORS preflights are answered from the same settings.
- **Token.** TorchServe 0.12's keys (:mod:`nbserve.api.tokens`): the inference key for the inference
  API, the management key for the management API, the API key for ``/token``. The metrics API
  takes none, as in TorchServe.

The kernel's tornado servers (:class:`nbserve.api.http.base.APIHandler`) and the Ray Serve ingress
run the same two calls on every request: :meth:`Access.admit`, then :func:`check_token`.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from nbserve.api.routes import API_NAMES
from nbserve.config import ServerConfig
from nbserve.errors import Forbidden, InvalidKey

_DEFAULT_CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
_DEFAULT_CORS_HEADERS = "Authorization, Content-Type"


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address) means this machine only."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str | None:
    try:
        return urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None


def _names(value) -> list[str]:
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


class Access:
    """The checks one API's server applies to every request, from its settings and address."""

    def __init__(self, config: ServerConfig, address: str):
        bound = urlsplit(address).hostname
        #: Host names are checked only where the server listens on loopback alone.
        self.check_hosts = is_loopback(bound) and not config.allow_remote_access
        self.local_hostnames = {n.lower() for n in _names(config.local_hostnames)} | {bound.lower()}
        self.origins = _names(config.cors_allowed_origin)
        self.methods = config.cors_allowed_methods or _DEFAULT_CORS_METHODS
        self.headers = config.cors_allowed_headers or _DEFAULT_CORS_HEADERS

    def check_host(self, host_header: str) -> None:
        if not self.check_hosts:
            return
        name = _hostname(host_header)
        if name is None or not (is_loopback(name) or name.lower() in self.local_hostnames):
            raise Forbidden(f"Host {host_header!r} is not this machine: the server listens on "
                            "loopback only. Add the name to local_hostnames in config.properties "
                            "to allow it.")

    def admit(self, headers, method: str, scheme: str, host: str) -> tuple[dict[str, str], bool]:
        """Check a request's Host and Origin (403 if refused); the CORS headers its answer
        carries, and whether it is a CORS preflight (answered with those headers alone, before
        any key is asked for)."""
        self.check_host(host)
        origin = self.cross_origin(headers, method, f"{scheme}://{host}")
        if origin is None:
            return {}, False
        preflight = method == "OPTIONS" and "Access-Control-Request-Method" in headers
        return self.cors_headers(origin, preflight), preflight

    def cross_origin(self, headers, method: str, own_origin: str) -> str | None:
        """The ``Origin`` of a request from another origin (None for same-origin and non-browser
        requests); 403 where the CORS settings do not admit it."""
        origin = headers.get("Origin")
        if origin is None or origin == own_origin:
            return None
        method = headers.get("Access-Control-Request-Method", method)
        if not self._admits(origin):
            raise Forbidden(f"Requests from {origin} are not allowed: add the origin to "
                            "cors_allowed_origin in config.properties to allow them.")
        if method.upper() not in {m.upper() for m in _names(self.methods)}:
            raise Forbidden(f"{method} requests from {origin} are not allowed: add {method} to "
                            "cors_allowed_methods in config.properties to allow them.")
        return origin

    def _admits(self, origin: str) -> bool:
        return "*" in self.origins or origin in self.origins

    def cors_headers(self, origin: str, preflight: bool) -> dict[str, str]:
        headers = {"Access-Control-Allow-Origin": "*" if self.origins == ["*"] else origin,
                   "Vary": "Origin"}
        if preflight:
            headers.update({"Access-Control-Allow-Methods": self.methods,
                            "Access-Control-Allow-Headers": self.headers,
                            "Access-Control-Max-Age": "600"})
        return headers


def check_token(tokens, kind: str | None, authorization: str | None) -> None:
    """InvalidKey (400, as TorchServe) unless ``authorization`` holds the live ``kind`` key
    (where tokens are on)."""
    if tokens is not None and kind is not None and not tokens.allows(kind, authorization):
        raise InvalidKey("Token Authorization failed. Token either incorrect, expired, or not "
                         f"provided correctly: send 'Authorization: Bearer <{kind} key>', with "
                         "the key from the server's key file.")


def exposure_warnings(config: ServerConfig) -> list[str]:
    """What a user must hear before an API listens beyond this machine."""
    warnings = []
    for api in API_NAMES:
        address = config.values[f"{api}_address"]
        if is_loopback(urlsplit(address).hostname):
            continue
        if not config.token_authorization and api != "metrics":
            warnings.append(f"Warning: the {api} API listens on {address} with token "
                            "authorization off: anyone who can reach this machine can call it"
                            + (" and change the models served." if api == "management" else ".")
                            + " Remove disable_token_authorization, or listen on 127.0.0.1.")
        elif urlsplit(address).scheme == "http" and api != "metrics":
            warnings.append(f"Warning: the {api} API listens on {address} over plain HTTP: its "
                            "key travels unencrypted. Set certificate_file and private_key_file "
                            "and use https://.")
    return warnings


def serving_notices(config: ServerConfig, tokens) -> list[str]:
    """What a user must know once the APIs listen: any exposure, and where the keys are."""
    return exposure_warnings(config) + ([key_notice(tokens)] if tokens is not None else [])


def key_notice(tokens) -> str:
    """Where the keys are, never the keys themselves (a cell's output is saved)."""
    return (f"Token authorization is on: the keys are in {tokens.key_file} (send "
            "'Authorization: Bearer <key>'; --disable-token-auth turns it off).")
