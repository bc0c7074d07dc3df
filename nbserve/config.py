"""The server's settings, as TorchServe's ``config.properties`` names them: read from the file,
``TS_*`` variables where allowed, then the command line; loopback and tokens on by default."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbserve.errors import BadRequest

#: config.properties keys nbserve reads, with TorchServe's defaults (addresses on loopback).
SERVER_DEFAULTS: dict[str, Any] = {
    "inference_address": "http://127.0.0.1:8080",
    "management_address": "http://127.0.0.1:8081",
    "metrics_address": "http://127.0.0.1:8082",
    "model_store": None,
    # Where POST /workflows?url= finds .war files; unset, the model store (as TorchServe).
    "workflow_store": None,
    "load_models": None,
    "models": None,
    # A TorchServe snapshot's models (nbserve.api.snapshot): what to serve, instead of
    # --models, load_models and models, as TorchServe restores it.
    "model_snapshot": None,
    "default_workers_per_model": None,
    "job_queue_size": 1000,
    "max_request_size": 6553500,
    "max_response_size": 6553500,
    # nbserve's limits on clients (see nbserve.api.limits), tornado's and nginx's names.
    "max_connections": 4096,
    "idle_connection_timeout": 60.0,
    "body_timeout": 120.0,
    "lingering_size": 128 * 2**20,
    "lingering_time": 10.0,
    "max_kserve_instances": 1000,
    "default_response_timeout": 120.0,
    "default_startup_timeout": 120.0,
    "enable_model_api": False,
    "allowed_urls": "file://.*|http(s)?://.*",
    "max_download_size": 10 * 2**30,
    "download_timeout": 600.0,
    "disable_token_authorization": False,
    "token_expiration_min": 60.0,
    "cors_allowed_origin": None,
    "cors_allowed_methods": None,
    "cors_allowed_headers": None,
    "certificate_file": None,
    "private_key_file": None,
    "enable_envvars_config": False,
    "use_env_allowed_urls": False,
    "metrics_config": None,
    # With metrics_config: export handler metrics it does not declare too (TorchServe's).
    "model_metrics_auto_detect": False,
    # TorchServe's: "log" also writes model_metrics.log and ts_metrics.log (nbserve.logs);
    # /metrics answers Prometheus text in every mode.
    "metrics_mode": "log",
    # TorchServe's system metrics (nbserve.api.system_metrics), taken this often in seconds.
    "disable_system_metrics": False,
    "metric_time_interval": 60.0,
    "install_py_dep_per_model": False,
    "number_of_gpu": None,
    "limit_max_image_pixels": True,
    # nbserve's: "process" or "thread" workers; unset, the default of who serves (see startup).
    "isolation": None,
    # nbserve's: each worker's preprocessing threads; unset, the CPUs shared among workers.
    "preprocess_threads": None,
    # nbserve's: a file for the access log (TorchServe's ACCESS_LOG lines), or "-" for stderr.
    "access_log": None,
    # TorchServe's gRPC APIs (nbserve.api.grpc), on loopback; unset, the default of who serves:
    # on in nbserve serve where grpcio is installed, as TorchServe always serves them; off in a
    # kernel, where 7070/7071 would be taken by the first of several kernels.
    "enable_grpc": None,
    "grpc_inference_port": 7070,
    "grpc_management_port": 7071,
    "grpc_inference_address": None,
    "grpc_management_address": None,
    "enable_grpc_ssl": False,
    "grpc_inference_max_connection_age_ms": None,
    "grpc_management_max_connection_age_ms": None,
    # Jupyter's names: which Host names a server on loopback answers (see nbserve.api.access).
    "allow_remote_access": False,
    "local_hostnames": "localhost",
}
#: TorchServe 0.12 keys nbserve does not apply, and why: each one set is named in a warning.
_NO_NETTY = "nbserve has no Netty: each API is a tornado server"
NOT_APPLIED = {
    **dict.fromkeys(("number_of_netty_threads", "netty_client_threads", "use_native_io",
                     "io_ratio", "prefer_direct_buffer"), _NO_NETTY),
    **dict.fromkeys(("grpc_inference_max_connection_age_grace_ms",
                     "grpc_management_max_connection_age_grace_ms"),
                    "a gRPC connection past its age is closed after the calls in flight"),
    "system_metrics_cmd": "system metrics are taken with psutil, in the server",
    **dict.fromkeys(("ipex_enable", "ipex_gpu_enable", "cpu_launcher_enable",
                     "cpu_launcher_args"),
                    "nbserve runs models in this process; it does not launch workers with IPEX "
                    "or a CPU launcher"),
    "snapshot_store": "snapshots are files in logs/config (LOG_LOCATION), as by default",
    **dict.fromkeys(("ts_header_key_sequence_id", "ts_header_key_sequence_start",
                     "ts_header_key_sequence_end"),
                    "sequence batching reads TorchServe's default header names"),
    **dict.fromkeys(("initial_worker_port", "initial_distribution_port"),
                    "workers talk to the server over a socket pair, not a port"),
    "vmargs": "nbserve has no Java VM",
    "python": "worker processes run on the Python that runs nbserve",
    "version": "it names the TorchServe that wrote a snapshot",
    "enable_metrics_api": "the metrics API is always on (loopback, read-only, no key)",
    "async_logging": "nbserve logs through Python's logging",
    "plugins_path": "TorchServe's Java plugins cannot run here",
    "default_service_handler": "a model without a handler is refused rather than given one",
    "service_envelope": "requests and answers are TorchServe's default (body) envelope",
    "decode_input_request": "bodies are always decoded as TorchServe decodes them by default",
    "unregister_model_timeout": "unregistering answers the queued requests first, unbounded",
    "model_server_home": "nbserve needs no home folder",
    "cpp_log_config": "the C++ backend is not supported",
    "ts_open_inference_protocol": "the KServe v1/v2 routes are always served",
    "blacklist_env_vars": "worker processes inherit the server's environment whole",
    "debug": "nbserve has no Java debugger to attach",
}
#: TorchServe's Java keystore settings; nbserve reads PEM files instead.
KEYSTORE_KEYS = {"keystore", "keystore_pass", "keystore_type"}
#: Environment variables that differ from ``TS_`` + the key in capitals.
_ENV_NAMES = {"token_expiration_min": "TS_TOKEN_EXPIRATION_TIME_MIN"}


@dataclass
class ServerConfig:
    """The server's settings, as TorchServe's ``config.properties`` names them."""

    values: dict = field(default_factory=lambda: dict(SERVER_DEFAULTS))
    #: One line for each key read that nbserve does not apply: TorchServe keys with the reason,
    #: and keys neither knows.
    warnings: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        """A setting, typed as its default is (``config.job_queue_size`` is an int even where
        it was set as the text ``"50"``), so no reader casts it."""
        values = self.__dict__.get("values", {})
        if name not in values:
            raise AttributeError(name)
        value = values[name]
        return _server_value(name, value) if isinstance(value, str) and name in SERVER_DEFAULTS \
            else value

    @classmethod
    def from_properties(cls, path) -> "ServerConfig":
        config = cls()
        for key, value in read_properties(path).items():
            if key in KEYSTORE_KEYS:
                raise BadRequest(f"config.properties: {key}: nbserve reads PEM files, not a Java "
                                 "keystore; set certificate_file and private_key_file instead.")
            if key in SERVER_DEFAULTS:
                config.values[key] = _server_value(key, value)
            elif key in NOT_APPLIED:
                config.warnings.append(f"config.properties key {key!r} is not applied: "
                                       f"{NOT_APPLIED[key]}.")
            else:
                config.warnings.append(f"unknown config.properties key {key!r} ignored.")
        return config

    def apply_environment(self, environ: dict[str, str]) -> None:
        """With ``enable_envvars_config=true``, ``TS_<KEY>`` variables override the settings,
        as in TorchServe (``TS_ALLOWED_URLS`` only with ``use_env_allowed_urls=true`` too)."""
        if not self.enable_envvars_config:
            return
        for key in SERVER_DEFAULTS:
            if key == "allowed_urls" and not self.use_env_allowed_urls:
                continue
            value = environ.get(_ENV_NAMES.get(key, f"TS_{key.upper()}"))
            if value is not None:
                self.values[key] = _server_value(key, value)

    @property
    def token_authorization(self) -> bool:
        """Whether the APIs ask for TorchServe's keys (on unless disabled, as in 0.12)."""
        return not self.disable_token_authorization

    def allows_url(self, url: str) -> bool:
        return any(re.fullmatch(p.strip(), url) for p in str(self.allowed_urls).split(","))

    @property
    def restoring(self) -> bool:
        """Whether this is a snapshot's config, whose models are the ones to serve."""
        return bool(self.values.get("model_snapshot"))

    def model_settings(self) -> dict:
        """``{name: {version: {marName, minWorkers, ...}}}``: a snapshot's models, else the
        ``models`` property."""
        key = "model_snapshot" if self.restoring else "models"
        raw = self.values.get(key)
        if not raw:
            return {}
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as e:
            raise BadRequest(f"config.properties: {key!r} is not valid JSON ({e}).") from None
        return value.get("models", {}) if key == "model_snapshot" else value


def read_properties(path) -> dict[str, str]:
    """A Java properties file: ``key=value`` or ``key: value``, ``#``/``!`` comments, lines
    continued by a trailing backslash, and Java's escapes (``\\:``, ``\\=``, ``\\n``,
    ``\\uXXXX``), which TorchServe's snapshots are full of."""
    values: dict[str, str] = {}
    with open(path) as f:
        lines = iter(f.read().splitlines())
    for line in lines:
        line = line.strip()
        while _continues(line):
            line = line[:-1] + next(lines, "").strip()
        if not line or line[0] in "#!":
            continue
        match = _SEPARATOR.search(line)
        key, value = (line[:match.start()], line[match.end():]) if match else (line, "")
        values[_unescape(key)] = _unescape(value)
    return values


def write_properties(path, values: dict[str, str], comment: str) -> None:
    """``values`` as Java writes a properties file (``Properties.store``), so TorchServe and
    :func:`read_properties` read them back."""
    lines = [f"#{comment}", f"#{time.strftime('%a %b %d %H:%M:%S %Z %Y')}"]
    lines += [f"{_escape(key)}={_escape(value)}" for key, value in values.items()]
    Path(path).write_text("\n".join(lines) + "\n")


#: The first ``=``, ``:`` or run of spaces not escaped by a backslash, with spaces around it.
_SEPARATOR = re.compile(r"(?<!\\)(?:\\\\)*\s*[=:]\s*|(?<!\\)(?:\\\\)*\s+")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f"}


def _continues(line: str) -> bool:
    """An odd number of backslashes at the end continues the line."""
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _unescape(text: str) -> str:
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)",
                  lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 5
                  else _ESCAPES.get(m[1], m[1]), text)


def _escape(text: str) -> str:
    text = text.replace("\\", "\\\\")
    for char, escaped in (("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r"), ("=", "\\="),
                          (":", "\\:"), ("#", "\\#"), ("!", "\\!")):
        text = text.replace(char, escaped)
    return text


def _server_value(key: str, value: str) -> Any:
    default = SERVER_DEFAULTS[key]
    if isinstance(default, bool) or key == "enable_grpc":  # unset: None, see SERVER_DEFAULTS
        return value.strip().lower() == "true"
    if isinstance(default, (int, float)):
        try:
            return type(default)(value)
        except ValueError:
            raise BadRequest(f"config.properties: {key} must be a number, not {value!r}.") from None
    if key in ("default_workers_per_model", "number_of_gpu", "preprocess_threads"):
        try:
            return int(value)
        except ValueError:
            raise BadRequest(f"config.properties: {key} must be a number, not {value!r}.") from None
    return value
