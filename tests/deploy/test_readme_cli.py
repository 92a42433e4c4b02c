"""Every `serving ...` example in README.md runs as written after the README's own setup
(`. .venv/bin/activate`, which puts the CLI on PATH), in a real shell, against real
deployments in a private $SERVING_HOME (issue 16, item 1).

Three liberties, all stated here: the examples of the Deployments section run first, so
that `serving runs ...` has runs to show; the placeholder `RUN_ID` is replaced by a
run id those made; and the docker flavor's default base image is this machine's offline
one (`SERVING_DOCKER_BASE_IMAGE`, as a user without registry access would set it). The
commands run in a scratch folder that links `examples/` and `.venv/`, so the files
`render -o` writes stay out of the repository. An example whose comment says `refused`
must fail, in one line. The Docker examples need the engine the docker tests use.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from deploy_helpers import CLI_TIMEOUT, Home
from docker_helpers import engine, ensure_base_image, remove_deployments_of

from serving.deploy.deployers.docker import BASE_IMAGE_ENV

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ACTIVATE = ". .venv/bin/activate"


def code_lines(text: str) -> list[str]:
    """Lines of the README's code: indented blocks and fenced blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            lines.append(line.strip())
    return lines


def cli_examples(text: str) -> list[tuple[str, str]]:
    """(command, comment) for every `serving ...` line of the README's code."""
    examples = []
    for line in code_lines(text):
        if line.startswith("serving "):
            command, _, comment = line.partition(" #")
            examples.append((command.strip(), comment.strip()))
    return examples


def run(home: Home, command: str, cwd: Path, base_image: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", f"{ACTIVATE}\n{command}"],
        cwd=cwd,
        env={**home.env(), BASE_IMAGE_ENV: base_image},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def test_the_readme_puts_the_cli_on_path_in_its_setup() -> None:
    text = README.read_text()
    assert ACTIVATE in code_lines(text)
    assert text.index(ACTIVATE) < text.index("    serving "), "activate before the first CLI example"


def test_every_readme_cli_example_runs_as_written(home: Home, tmp_path: Path) -> None:
    client = engine()
    base_image = ensure_base_image(client)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name in ("examples", ".venv"):
        (scratch / name).symlink_to(ROOT / name)
    try:
        _run_examples(home, scratch, base_image)
    finally:
        remove_deployments_of(client, home.path, set())


def _run_examples(home: Home, scratch: Path, base_image: str) -> None:
    examples = cli_examples(README.read_text())
    assert len(examples) >= 15, examples
    runs = [e for e in examples if e[0].startswith("serving runs ")]
    ordered = [e for e in examples if e not in runs] + runs
    run_id = ""
    for command, comment in ordered:
        if "RUN_ID" in command:
            assert run_id, "no run id to show"
            command = command.replace("RUN_ID", run_id)
        result = run(home, command, scratch, base_image)
        shown = f"$ {command}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, shown
        if comment.startswith("refused"):
            errors = [ln for ln in result.stderr.splitlines() if ln.startswith("serving: error: ")]
            assert result.returncode == 1 and len(errors) == 1, shown
            continue
        assert result.returncode == 0, shown
        if command == "serving runs list --output json":
            found = re.search(r'"run_id": ?"([0-9a-f]+)"', result.stdout)
            assert found, shown
            run_id = found.group(1)
