"""The nginx target: Debian's nginx with targets/nginx/nginx.conf, under its own prefix in the run directory.

Everything nginx writes (pid, temp paths, error log, access log) is under ``<run>/received/nginx/``, so it
needs neither root nor /etc, /var or /run; it listens on a free loopback port. POST bodies are logged with
the echo module (``echo_read_request_body``), which Debian's nginx-light ships as a dynamic module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from lossbench.analysis.adapters.nginx import FORMATS
from lossbench.system import raise_fd_limit
from lossbench.targets.process import HOST, TARGETS_DIR, Target, TargetError, free_port, wait_until_answers

INSTALL = "apt-get install nginx-light"
SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/local/sbin", "/sbin")
"""Where Debian puts nginx, searched after PATH (a user's PATH often lacks them)."""
ECHO_MODULES: tuple[str, ...] = (
    "/usr/lib/nginx/modules/ngx_http_echo_module.so",
    "/usr/lib64/nginx/modules/ngx_http_echo_module.so",
    "/usr/share/nginx/modules/ngx_http_echo_module.so",
)
TEMPLATE = TARGETS_DIR / "nginx" / "nginx.conf"
LOG_FORMAT = "lossbench"
ACCESS_LOG = "access.log"
START_ATTEMPTS = 3  # a free port can be taken between choosing it and nginx binding it


def find_nginx() -> str:
    """The nginx binary on PATH or in the sbin directories; a clear error naming the install line."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which("nginx", path=path)
    if found is None:
        raise TargetError(
            f"nginx not found (searched PATH and {', '.join(SBIN_DIRS)}): install it with `{INSTALL}` "
            "(as root: apt-get update && apt-get install -y nginx-light)"
        )
    return found


def echo_module_line(nginx: str) -> str:
    """The ``load_module`` line for the echo module, or "" when nginx has it built in."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
    if "echo-nginx-module" in built or "http_echo" in built:
        return ""
    for module in ECHO_MODULES:
        if Path(module).is_file():
            return f"load_module {module};"
    raise TargetError(
        f"{nginx} has no echo module (ngx_http_echo_module), which the nginx target needs to log POST "
        f"bodies; looked in {', '.join(ECHO_MODULES)}. Install Debian's nginx with `{INSTALL}`"
    )


def render_config(port: int, echo_line: str, template: Path = TEMPLATE) -> str:
    """targets/nginx/nginx.conf with its placeholders filled."""
    try:
        text = template.read_text()
    except OSError as exc:
        raise TargetError(
            f"{template}: the nginx target's configuration is missing ({exc.strerror}); it ships in the "
            "lossbench source checkout under targets/nginx/"
        ) from None
    log_format = "'" + FORMATS[LOG_FORMAT].replace("\\", "\\\\").replace("'", "\\'") + "'"
    for name, value in {
        "@LOAD_ECHO@": echo_line,
        "@LOG_FORMAT@": log_format,
        "@ACCESS_LOG@": ACCESS_LOG,
        "@LISTEN@": f"{HOST}:{port}",
    }.items():
        if name not in text:
            raise TargetError(f"{template}: placeholder {name} is missing; restore it from the source")
        text = text.replace(name, value)
    return text


def start_nginx(run_dir: Path, timeout: float = 10.0) -> Target:
    """nginx on a free loopback port with its prefix in ``<run>/received/nginx/``, answering when returned."""
    nginx = find_nginx()
    echo_line = echo_module_line(nginx)
    prefix = (Path(run_dir) / "received" / "nginx").resolve()
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    error_log = prefix / "error.log"
    last: TargetError | None = None
    for _ in range(START_ATTEMPTS):
        port = free_port()
        (prefix / "nginx.conf").write_text(render_config(port, echo_line))
        since = error_log.stat().st_size if error_log.exists() else 0
        with (prefix / "stderr.log").open("ab") as stderr:
            proc = subprocess.Popen(
                [nginx, "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "error.log"],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                preexec_fn=raise_fd_limit,  # soft fd limit to the hard one, as the reference collector does
            )
        try:
            wait_until_answers(proc, port, "nginx", error_log, timeout, since)
        except TargetError as exc:
            if "Address already in use" not in str(exc):
                raise
            last = exc
            continue
        access = prefix / ACCESS_LOG
        return Target(
            kind="nginx",
            url=f"http://{HOST}:{port}",
            process=proc,
            raw_logs=(access,),
            received_from=f"nginx:{access.relative_to(Path(run_dir).resolve())}:{LOG_FORMAT}",
            stop_signal=signal.SIGQUIT,  # graceful: requests in flight finish and are logged
        )
    assert last is not None
    raise last
