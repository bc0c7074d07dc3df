"""The access log: TorchServe's ACCESS_LOG line for each request, with its id."""

import re
import time

from tests.support.archives import controlled

#: A TorchServe access-log line, as log4j writes it to logs/access_log.log.
LINE = re.compile(r'(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3}) - /127\.0\.0\.1:\d+ '
                  r'(?P<request>"[A-Z]+ \S+ HTTP/1\.1" \d{3}) \d+(?: (?P<id>\S+))?')


def lines_of(path, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    return lines


def test_each_request_is_a_line_shaped_as_torchserves(server_factory, torchserve, tmp_path):
    log = tmp_path / "access.log"
    engine, _, clients = server_factory(access_log=str(log))
    engine.register(controlled(tmp_path), batch_size=4)
    name = torchserve.register(controlled(tmp_path / "theirs"))
    theirs = torchserve.workdir / "logs" / "access_log.log"
    before = len(theirs.read_text().splitlines())
    requests = [("POST", f"/predictions/{name}", b"{}"), ("PUT", "/predictions/nope", b"x"),
                ("GET", "/ping", None)]
    for method, path, body in requests:
        clients["inference"].call(method, path, body, {"Content-Type": "application/json",
                                                       "X-Request-ID": f"log-{method}"})
        torchserve.request("inference", path, method, body, {"Content-Type": "application/json"})
    ours = [LINE.fullmatch(line) for line in lines_of(log, 3)]
    their_lines = lines_of(theirs, before + 3)[before:]
    assert [m["request"] for m in ours] == [LINE.fullmatch(line)["request"] for line in their_lines]
    assert [m["request"] for m in ours] == ['"POST /predictions/ctl HTTP/1.1" 200',
                                            '"PUT /predictions/nope HTTP/1.1" 404',
                                            '"GET /ping HTTP/1.1" 200']
    assert [m["id"] for m in ours] == ["log-POST", "log-PUT", "log-GET"]


def test_a_refused_request_is_logged_and_no_log_is_written_unless_asked(server_factory, tmp_path):
    log = tmp_path / "access.log"
    _, server, clients = server_factory(access_log=str(log))
    clients["management"].call("GET", "/models", headers={"Authorization": "Bearer wrong"})
    [line] = lines_of(log, 1)
    assert LINE.fullmatch(line)["request"] == '"GET /models HTTP/1.1" 400'
    _, quiet, _ = server_factory()
    assert quiet.access_log is None
