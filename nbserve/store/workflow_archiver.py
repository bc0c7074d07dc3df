"""Workflow archives written as ``torch-workflow-archiver`` 0.2.15 writes them (``nbserve
archive-workflow``, :func:`nbserve.archive_workflow`): the spec, the handler file and the extra
files at the top level, and ``WAR-INF/MANIFEST.json`` with its keys, so TorchServe serves what
nbserve makes. The node archives the spec names stay in the model store, as TorchServe
expects them."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

from nbserve.errors import ArchiveError
from nbserve.store.archiver import Progress, existing_file, extra_members, write_archive
from nbserve.store.workflow_archive import MANIFEST_PATH

#: The version of torch-workflow-archiver whose archives these are (TorchServe reads it).
ARCHIVER_VERSION = "0.2.15"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")


def archive_workflow(workflow_name: str, spec_file: str | os.PathLike,
                     handler: str | os.PathLike | None = None, *,
                     extra_files: str | list | None = None, export_path: str | os.PathLike = ".",
                     force: bool = False, progress: Progress | None = None) -> Path:
    """Write ``{workflow_name}.war`` into ``export_path``, as ``torch-workflow-archiver
    --workflow-name --spec-file --handler --extra-files --export-path [-f]`` does; its path.

    >>> archive_workflow("pipeline", "spec.yaml", "functions.py",
    ...                  export_path="wf-store")                              # doctest: +SKIP
    PosixPath('wf-store/pipeline.war')
    """
    if not _NAME.match(workflow_name or ""):
        raise ArchiveError(f"Workflow name {workflow_name!r} contains special characters: it "
                           f"must match {_NAME.pattern}.")
    export_dir = Path(export_path)
    if not export_dir.is_dir():
        raise ArchiveError(f"Export path {str(export_dir)!r} is not a directory.")
    target = export_dir / f"{workflow_name}.war"
    if target.exists() and not force:
        raise ArchiveError(f"{target} already exists. Use --force/-f to overwrite it.")
    members: dict[str, Path] = {}
    for kind, value in (("spec file", spec_file), ("handler", handler)):
        if value is not None:
            path = existing_file(value, kind)
            members[path.name] = path
    members.update(extra_members(extra_files))
    manifest = {"createdOn": datetime.now().strftime("%d/%m/%Y %H:%M:%S"),
                "workflow": {"workflowName": workflow_name, "specFile": Path(spec_file).name,
                             "handler": Path(handler).name if handler else ""},
                "archiverVersion": ARCHIVER_VERSION}
    write_archive(target, "default", workflow_name, members, json.dumps(manifest, indent=2),
                  progress, manifest_path=MANIFEST_PATH)
    return target
