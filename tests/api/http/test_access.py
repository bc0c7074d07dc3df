"""Host, Origin and CORS checks, and HTTPS, over real HTTP: a refused request runs nothing."""

import datetime
import json
import shutil
import ssl
import subprocess
import urllib.request

import pytest

from tests.support import archives


@pytest.fixture
def served(server_factory, tmp_path):
    """A server with the model API on, ``ctl`` registered, and a model store to register from."""
    def make(**settings):
        store = tmp_path / "store"
        store.mkdir(exist_ok=True)
        shutil.copy(archives.controlled(tmp_path / "made"), store / "ctl.mar")
        engine, server, clients = server_factory(enable_model_api=True, model_store=str(store),
                                                 **settings)
        engine.register(store / "ctl.mar")
        return engine, server, clients
    return make


def _unchanged(engine) -> None:
    """Nothing a refused request asked for happened: ``ctl`` alone, one worker, never run."""
    assert [m.name for m in engine.models()] == ["ctl"]
    version = engine.get("ctl")
    assert len(version.workers) == 1 and version.stats.requests == 0


def test_a_foreign_host_is_refused_and_localhost_is_answered(served):
    engine, _, clients = served()
    management, inference = clients["management"], clients["inference"]
    for host in ("evil.example", "evil.example:8081", "10.0.0.1", "[fe80::1]"):
        for method, path in (("DELETE", "/models/ctl"), ("PUT", "/models/ctl?min_worker=3"),
                             ("POST", "/models?url=ctl.mar&model_name=intruder")):
            status, _, body = management.call(method, path, headers={"Host": host})
            assert (status, json.loads(body)["type"]) == (403, "ForbiddenException"), host
        assert inference.call("POST", "/predictions/ctl", b"1", headers={"Host": host})[0] == 403
    _unchanged(engine)
    for host in ("localhost", "localhost:8080", "127.0.0.1", "127.0.0.2:1", "[::1]:8080"):
        assert inference.call("GET", "/ping", headers={"Host": host})[0] == 200, host


def test_local_hostnames_and_allow_remote_access_admit_more_names(served):
    _, _, clients = served(local_hostnames="localhost,notebook.lan")
    ping = clients["inference"].call
    assert ping("GET", "/ping", headers={"Host": "notebook.lan:8080"})[0] == 200
    assert ping("GET", "/ping", headers={"Host": "other.lan"})[0] == 403
    _, _, clients = served(allow_remote_access=True)
    assert clients["inference"].call("GET", "/ping", headers={"Host": "other.lan"})[0] == 200


def test_a_cross_site_post_does_nothing(served):
    """ShellTorch's pattern: a page posts a registration; no preflight, so the server must refuse
    it before acting, key or not."""
    engine, _, clients = served()
    page = {"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"}
    for client, path in ((clients["management"], "/models?url=ctl.mar&model_name=intruder"),
                         (clients["inference"], "/predictions/ctl")):
        for headers in (page, {**page, "Authorization": "Bearer guess"}):
            status, response_headers, body = client.call("POST", path, b"x=1", headers=headers)
            assert status == 403 and "evil.example" in json.loads(body)["message"]
            assert "Access-Control-Allow-Origin" not in response_headers
    status, _, _ = clients["management"].call("OPTIONS", "/models", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "DELETE"})
    assert status == 403
    _unchanged(engine)


def test_cors_preflight_and_answers_follow_the_settings(served):
    engine, _, clients = served(cors_allowed_origin="https://app.example",
                                cors_allowed_methods="GET, POST", cors_allowed_headers="Authorization")
    inference = clients["inference"]
    status, headers, _ = inference.call("OPTIONS", "/predictions/ctl", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Authorization": ""})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert headers["Access-Control-Allow-Headers"] == "Authorization"
    status, headers, body = inference.call("POST", "/predictions/ctl", b'{"a": 1}', headers={
        "Origin": "https://app.example", "Content-Type": "application/json"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert json.loads(body)["echo"] == {"a": 1}
    # A method the settings leave out, and another origin, are refused before anything runs.
    management = clients["management"]
    assert management.call("DELETE", "/models/ctl", headers={"Origin": "https://app.example"})[0] == 403
    assert inference.call("OPTIONS", "/predictions/ctl", headers={
        "Origin": "https://other.example", "Access-Control-Request-Method": "POST"})[0] == 403
    assert [m.name for m in engine.models()] == ["ctl"]


def _self_signed(folder, key=None):
    """A certificate for 127.0.0.1 and localhost, and its key (``key``, or a new EC one), as
    PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_https_from_pem_files_and_curl_cacert(server_factory, tmp_path):
    cert_file, key_file = _self_signed(tmp_path)
    _, server, _ = server_factory(
        certificate_file=str(cert_file), private_key_file=str(key_file),
        **{f"{api}_address": "https://127.0.0.1:0" for api in ("inference", "management", "metrics")})
    assert all(url.startswith("https://127.0.0.1:") for url in server.urls.values())
    bearer = f"Authorization: Bearer {server.tokens.keys['management']}"
    listing = subprocess.run(["curl", "-s", "--cacert", str(cert_file), "-H", bearer,
                              f"{server.urls['management']}/models"],
                             capture_output=True, text=True, timeout=30)
    assert json.loads(listing.stdout) == {"models": []}
    unverified = subprocess.run(["curl", "-s", f"{server.urls['metrics']}/metrics"],
                                capture_output=True, timeout=30)
    assert unverified.returncode != 0  # curl refuses a certificate it cannot verify
    context = ssl.create_default_context(cafile=str(cert_file))
    with urllib.request.urlopen(f"{server.urls['metrics']}/metrics", context=context) as answer:
        assert answer.status == 200


def test_a_weak_key_is_served_and_named_as_torchserve_serves_its_test_certificate(
        server_factory, tmp_path, caplog):
    """TorchServe's own test certificate has a 1,024-bit RSA key, which OpenSSL 3 refuses at its
    default level and Java accepts."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    cert_file, key_file = _self_signed(
        tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=1024))
    _, server, _ = server_factory(certificate_file=str(cert_file), private_key_file=str(key_file),
                                  metrics_address="https://127.0.0.1:0")
    assert f"certificate_file {cert_file} has a key too small" in caplog.text
    context = ssl.create_default_context(cafile=str(cert_file))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with urllib.request.urlopen(f"{server.urls['metrics']}/metrics", context=context) as answer:
        assert answer.status == 200


def test_https_without_pem_files_and_java_keystores_say_what_to_set(server_factory, tmp_path):
    from nbserve.config import ServerConfig
    from nbserve.errors import BadRequest

    with pytest.raises(BadRequest, match="certificate_file and private_key_file"):
        server_factory(inference_address="https://127.0.0.1:0")
    properties = tmp_path / "config.properties"
    properties.write_text("keystore=src/test/resources/keystore.p12\nkeystore_pass=changeit\n")
    with pytest.raises(BadRequest, match="PEM files.*certificate_file and private_key_file"):
        ServerConfig.from_properties(properties)
