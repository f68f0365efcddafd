"""The README's commands are code: run them as written, only shorter (durations, users) and into tmp."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, master_on_a_free_port

README = (ROOT / "README.md").read_text()
pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    """Commands from the README's bash blocks (comments dropped), in order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.split("   #")[0].strip()
            if line and not line.startswith(("#", ".")):
                commands.append(line)
    return commands


def shorten(command: str, out: Path) -> list[str]:
    """Same command, a few seconds long, writing under ``out``."""
    args = shlex.split(command)
    replacements = {"--duration": "4", "--users": "20", "-t": "4s", "-u": "20"}
    for i, arg in enumerate(args[:-1]):
        if arg in replacements:
            args[i + 1] = replacements[arg]
        elif arg == "--vary" and args[i + 1].startswith("users="):
            args[i + 1] = "users=10,20"  # a sweep of the load: two small points
    return args


def test_make_targets_are_the_two_commands():
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in README and "make test" in README
    assert re.search(r"^demo: setup\n\t\$\(BIN\)/lossbench run$", makefile, re.M)
    assert re.search(r"^test: setup lint\n\t\$\(BIN\)/pytest", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_commands_run(tmp_path):
    commands = readme_commands()
    assert any(c.startswith("lossbench run") for c in commands)
    ids: dict[str, str] = {}  # the placeholder of the last run or sweep, and the directory it made
    runs = 0
    for command in commands:
        if command.startswith("make "):
            continue  # CI runs `make test`; `make demo` is `lossbench run` (checked above)
        for placeholder, made in ids.items():
            command = command.replace(f"results/{placeholder}", str(tmp_path / made))
        assert "results/<" not in command, f"no run made {command!r}'s directory before it"
        args = shorten(command, tmp_path)
        if args[0] == "lossbench" and args[1] in ("run", "sweep"):
            runs += 1  # compare and report read the last run or sweep above them
            placeholder = "<run-id>" if args[1] == "run" else "<sweep-id>"
            made = ids[placeholder] = f"readme-{args[1]}-{runs}"
            args += ["--out", str(tmp_path), "--run-id", made]
        executable = [sys.executable, "-m", "lossbench.cli"] if args[0] == "lossbench" else None
        assert executable is not None, f"unexpected README command: {command}"
        result = subprocess.run(executable + args[1:], cwd=ROOT, capture_output=True, text=True, timeout=180)
        # compare's example gate may hold (exit 1) on a 4-second run; anything else must succeed
        allowed = (0, 1) if "--fail-if" in args else (0,)
        assert result.returncode in allowed, (command, result.stdout[-1500:], result.stderr[-1500:])


def test_readme_locust_commands_are_accepted(tmp_path):
    """The inline Locust examples: same flags, 4 seconds."""
    for n, command in enumerate(re.findall(r"`(locust -f scenarios/\S+ --headless[^`]*)`", README)):
        args = [*shorten(command, tmp_path), "--run-dir", str(tmp_path / f"locust-{n}")]
        if "--processes" in args:
            args += master_on_a_free_port()
        result = subprocess.run(
            [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0, (command, result.stderr[-2000:])
        assert "pixel-keepalive" in result.stdout
