"""The client commands README.md, docker/README.md and the docs/ pages document, run as written against the local stack.

Every ``mpcvit classify``, ``mpcvit demo --server`` and ``curl`` command of
these files' shell blocks (and the inline ``curl -s localhost:8000/...``
ones) runs against a real stack (dealer, two parties, coordinator, mutual
TLS) that serves the models the docs name. Only what a reader substitutes
too is replaced: the coordinator's address (the stack's port is a free one),
``ca.pem`` (the stack's CA certificate), the image file and the output
folder. A model renamed, a flag dropped or an endpoint moved fails here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mpcvit.commands.demo import find_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DOCS = (
    ROOT / "README.md",
    ROOT / "docker" / "README.md",
    *(ROOT / "docs" / page for page in (
        "getting-started.md", "service.md", "models.md", "bring-your-own-model.md", "research.md", "costs.md",
        "security-model.md",
    )),
)
CLIENT = re.compile(r"^(\.venv/bin/)?mpcvit (classify|demo --server)\b|^curl ")
ADDRESS = re.compile(r"(https?://)?(localhost|127\.0\.0\.1):8000")
IMAGES = ("some.png", "my-image.png")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every client command of the docs, in order."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
        lines += re.findall(r"`(curl -s localhost:8000/[^`]*)`", text)
        for line in lines:
            command = line.split("  #")[0].strip()
            if CLIENT.match(command):
                found.append((doc.relative_to(ROOT).as_posix(), command))
    return found


def models_named(commands: list[tuple[str, str]]) -> set[str]:
    return {m for _, c in commands for m in re.findall(r"(?:--model |model=)(\S+)", c)}


def test_the_docs_document_client_commands() -> None:
    commands = documented_commands()
    assert {doc for doc, _ in commands} == {"README.md", "docker/README.md", "docs/service.md"}
    assert len(commands) >= 6, commands


def _as_run(command: str, url: str, ca: Path, image: Path, out: Path) -> list[str]:
    argv = shlex.split(ADDRESS.sub(url, command))
    fixed = []
    for arg in argv:
        if arg == "ca.pem":
            arg = str(ca)
        elif arg in IMAGES:
            arg = str(image)
        elif arg.startswith("image=@") and arg[len("image=@"):] in IMAGES:
            arg = f"image=@{image}"
        elif arg == "images/":
            arg = str(out)
        fixed.append(arg)
    if fixed[0] in ("mpcvit", ".venv/bin/mpcvit"):
        fixed = [sys.executable, "-m", "mpcvit.cli", *fixed[1:]]
    return fixed


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_documented_client_commands_work_against_the_local_stack(tmp_path: Path) -> None:
    from mpcvit.localstack import LocalStack, StackConfig

    commands = documented_commands()
    models = tmp_path / "models"
    models.mkdir()
    for name in sorted(models_named(commands)):
        shutil.copytree(find_checkpoint(ROOT / "checkpoints", name), models / name)  # the docs' model must exist
    image = tmp_path / "image.png"
    Image.new("L", (28, 28), 128).save(image)
    first = sorted(models_named(commands))[0]
    with LocalStack(StackConfig(models_dir=models, model=first, workdir=tmp_path / "stack")) as stack:
        assert stack.endpoints is not None
        url = stack.endpoints.coordinator_url
        ca = stack.certs_dir / "ca" / "ca.pem"
        for doc, command in commands:
            argv = _as_run(command, url, ca, image, tmp_path / "images")
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
            assert done.returncode == 0, f"{doc}: {command}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
            if command.startswith("curl"):
                body = json.loads(done.stdout)
                assert "detail" not in body, f"{doc}: {command}: {body}"
                if "/v1/models" in command:
                    listed = json.dumps(body)
                    assert all(m in listed for m in models_named(commands)), body
                if "/classify/demo" in command:
                    assert body["coordinator_saw_image"] is True and "class_name" in json.dumps(body), body
