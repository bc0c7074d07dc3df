"""TorchServe's own test suite (pytorch/serve ``test/pytest``) against nbserve and TorchServe.

The suite starts its server with ``ts.launcher.start``, which runs ``torchserve --start``; for
nbserve a ``torchserve`` on ``PATH`` runs ``nbserve serve`` with the same flags. Each test file
runs in a network and mount namespace of its own (``unshare -n -m``) with a private ``/tmp``,
because TorchServe's workers keep their sockets there and every file starts servers on the same
ports. The project carries none of TorchServe's code: the suite is read from a pytorch/serve
checkout (or bare repository) named on the command line.

    python bench/torchserve_suite/run.py --serve-repo /path/to/pytorch/serve --server both \
        test_model_control_mode.py test_token_authorization.py ...

writes ``<out>/<server>/<file>.xml`` (JUnit) and prints, per file, what passed on each server
and every test that passed on TorchServe and not on nbserve.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import stand_ins

#: What the suite needs from the repository, beside ``test/``.
SUITE_PATHS = ("test", "ts_scripts", "examples", "model-archiver", "frontend/server/src/main/"
               "resources/proto", "frontend/server/src/test/resources",
               "frontend/archive/src/test/resources", "kubernetes/kserve/kf_request_json")
#: ``torchserve`` for the nbserve runs: the same flags, nbserve's server.
SHIM = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m nbserve serve \"$@\"\n"
#: Run inside the namespaces: loopback up, a private /tmp, TorchServe's gRPC stubs, the file.
IN_NAMESPACE = """set -e
mount -t tmpfs tmpfs /tmp
mkdir -p /tmp/workspace/model_store
ip link set lo up
cd {suite}/test/pytest
{python} -m grpc_tools.protoc -I {site} --proto_path={proto} --python_out=. \
    --grpc_python_out=. {proto}/inference.proto {proto}/management.proto
rm -rf logs
exec timeout {timeout} {python} -m pytest -p no:cacheprovider -q --timeout 600 \
    --junitxml={xml} {test}
"""


def extract_suite(serve_repo: Path, ref: str, into: Path) -> Path:
    """The suite's files at ``ref``, from a checkout or a bare repository; files whose blobs a
    partial mirror lacks (large weights) are left out, as the tests that need them fail on
    either server."""
    git = ["git", "--git-dir",
           str(serve_repo / ".git" if (serve_repo / ".git").exists() else serve_repo)]
    listing = subprocess.run([*git, "ls-tree", "-r", "-z", ref, "--", *SUITE_PATHS],
                             check=True, capture_output=True, text=True).stdout
    entries = [line.split("\t", 1) for line in listing.split("\0") if line]
    blobs = [(meta.split()[2], path) for meta, path in entries if meta.split()[1] == "blob"]
    reader = subprocess.Popen([*git, "cat-file", "--batch"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    for sha, path in blobs:
        reader.stdin.write(f"{sha}\n".encode())
        reader.stdin.flush()
        header = reader.stdout.readline().split()
        if header[-1] == b"missing":
            continue
        content = reader.stdout.read(int(header[2]) + 1)[:-1]
        target = into / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    reader.stdin.close()
    reader.wait()
    return into


def run_file(suite: Path, test: str, server: str, out: Path, timeout: int,
             downloads: Path) -> Path:
    """One test file against one server, in its own namespaces; the JUnit file it wrote."""
    xml = out / server / f"{Path(test).stem}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, (str(downloads), os.environ.get("PYTHONPATH")))))
    if server == "nbserve":
        shim = out / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "torchserve").write_text(SHIM)
        (shim / "torchserve").chmod(0o755)
        env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    script = IN_NAMESPACE.format(
        suite=shlex.quote(str(suite)), python=shlex.quote(sys.executable),
        site=shlex.quote(sysconfig.get_paths()["purelib"]),
        proto=shlex.quote(str(suite / "frontend/server/src/main/resources/proto")),
        timeout=timeout, xml=shlex.quote(str(xml.resolve())), test=shlex.quote(test))
    log = xml.with_suffix(".log")
    with open(log, "w") as output:
        subprocess.run(["unshare", "-n", "-m", "sh", "-c", script], env=env, stdout=output,
                       stderr=subprocess.STDOUT)
    return xml


def outcomes(xml: Path) -> dict[str, str]:
    """``{test: passed|failed|skipped}`` from a JUnit file (empty if the run wrote none)."""
    if not xml.exists():
        return {}
    results = {}
    for case in ET.parse(xml).iter("testcase"):
        kind = next((child.tag for child in case if child.tag in
                     ("failure", "error", "skipped")), "passed")
        results[case.get("name")] = {"error": "failed", "failure": "failed"}.get(kind, kind)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-repo", type=Path, required=True,
                        help="A pytorch/serve checkout or bare repository.")
    parser.add_argument("--ref", default="v0.12.0", help="The suite's tag (default v0.12.0).")
    parser.add_argument("--server", choices=("nbserve", "torchserve", "both"), default="both")
    parser.add_argument("--out", type=Path, default=Path("bench/torchserve_suite_results"))
    parser.add_argument("--timeout", type=int, default=900, help="Seconds per test file.")
    parser.add_argument("tests", nargs="*", help="Files under test/pytest (default: all).")
    args = parser.parse_args()

    suite = extract_suite(args.serve_repo.resolve(), args.ref,
                          Path(tempfile.mkdtemp(prefix="torchserve-suite-", dir="/var/tmp")))
    tests = args.tests or sorted(p.name for p in (suite / "test/pytest").glob("test_*.py"))
    servers = ("torchserve", "nbserve") if args.server == "both" else (args.server,)
    args.out = args.out.resolve()
    downloads = stand_ins.make(suite, args.out / "stand-ins")
    for test in tests:
        results = {s: outcomes(run_file(suite, test, s, args.out, args.timeout, downloads))
                   for s in servers}
        print(f"{test:60} " + "  ".join(f"{s} {passed(r)}/{len(r)}" for s, r in results.items()),
              flush=True)
    report(args.out, tests)


def passed(results: dict[str, str]) -> int:
    return sum(outcome == "passed" for outcome in results.values())


def report(out: Path, tests: list[str]) -> None:
    """Totals of each server's last run of these files, and what passed on TorchServe only."""
    results = {server: {f"{test}::{name}": outcome for test in tests
                        for name, outcome in outcomes(out / server / f"{Path(test).stem}.xml").items()}
               for server in ("torchserve", "nbserve")}
    for server, found in results.items():
        print(f"{server}: {passed(found)} passed of {len(found)}")
    behind = [name for name, outcome in results["torchserve"].items()
              if outcome == "passed" and results["nbserve"].get(name) != "passed"]
    if behind:
        print("passed on TorchServe, not on nbserve:", *behind, sep="\n  ")

if __name__ == "__main__":
    main()
