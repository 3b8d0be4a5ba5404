"""Start `largeforge serve` as a real subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def largeforge(*args: str, python: str = sys.executable) -> list[str]:
    """The argv that runs the `largeforge` CLI with `python` (this interpreter by default)."""
    return [python, "-m", "largeforge.entrypoints.cli.main", *args]


def cli_env() -> dict[str, str]:
    """The environment for CLI subprocesses: JSON logs so tests can read them."""
    return os.environ | {"LARGEFORGE_LOG_JSON": "1"}


def run_cli(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion in a subprocess, its output captured (logs as JSON)."""
    return subprocess.run(
        largeforge(*args), capture_output=True, text=True, env=cli_env(), timeout=timeout,
        check=False,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    command: str, *args: str, port: int, log: Path, python: str = sys.executable
) -> subprocess.Popen[bytes]:
    """Start `largeforge COMMAND --port PORT ARGS...` with `python`; output appended to `log`."""
    with log.open("a") as out:
        return subprocess.Popen(
            largeforge(*command.split(), "--port", str(port), *args, python=python),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )


def wait_ready(
    process: subprocess.Popen[bytes], base: str, log: Path, timeout: float = 240
) -> None:
    """Return once `base/health` answers 200; fail with the log if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"server not ready in {timeout}s: {log.read_text()}")
        time.sleep(0.3)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_server(
    *args: str, log: Path, timeout: float = 240, python: str = sys.executable
) -> Iterator[str]:
    """Yield the base URL once `/health` answers 200; stop the server afterwards.

    `python` is the interpreter that serves (another environment's, e.g. .venv-vllm's).
    """
    port = free_port()
    process = spawn("serve", *args, port=port, log=log, python=python)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base, log, timeout)
        yield base
    finally:
        stop(process)
