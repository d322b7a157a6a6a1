"""A private PulseAudio sound server for tests: a null sink whose monitor is the default input, so what
``paplay`` plays into the sink is what a microphone client (ALSA's ``pulse`` device) hears.

The server runs in its own runtime folder with an anonymous unix socket, never touching a user's or the
system's sound server; clients find it through ``PULSE_SERVER`` in ``env``. As root (this machine and CI)
PulseAudio warns that it is "not intended to be run as root" but runs as a per-user server in the folder
given: no ``--system`` (that mode refuses module loading by clients and runs as the ``pulse`` user).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers.broker import terminate, wait_until

PULSEAUDIO = "pulseaudio"
CLIENT_TOOLS = ("pactl", "paplay")
STARTUP_TIMEOUT_SECONDS = 10.0
PACTL_TIMEOUT_SECONDS = 10.0


def missing_tools() -> list[str]:
    """PulseAudio binaries this machine lacks (Debian: pulseaudio, pulseaudio-utils)."""
    return [tool for tool in (PULSEAUDIO, *CLIENT_TOOLS) if shutil.which(tool) is None]


class PulseServer:
    """``pulseaudio`` with one null sink ``sink`` whose ``<sink>.monitor`` is the default source."""

    def __init__(self, workdir: Path, sink: str = "nursery_test"):
        self.workdir = Path(workdir)
        self.sink = sink
        self.runtime_dir = self.workdir / "runtime"
        self.socket = self.runtime_dir / "native"
        self.log_path = self.workdir / "pulseaudio.log"
        self.process: subprocess.Popen | None = None
        self._sink_module: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment a client needs to reach this server (and no other): for subprocesses."""
        return {**os.environ, "PULSE_SERVER": f"unix:{self.socket}", "XDG_RUNTIME_DIR": str(self.runtime_dir),
                "HOME": str(self.workdir), "PULSE_RUNTIME_PATH": str(self.runtime_dir)}

    def start(self) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.chmod(0o700)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [PULSEAUDIO, "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--use-pid-file=no",
                 f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket}"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
        if not wait_until(lambda: self._answers() or self.process.poll() is not None, STARTUP_TIMEOUT_SECONDS) \
                or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"pulseaudio did not start: {self.log()[-2000:]}")
        self.load_sink()

    def _answers(self) -> bool:
        return self.socket.exists() and subprocess.run(["pactl", "info"], env=self.env, capture_output=True,
                                                       timeout=PACTL_TIMEOUT_SECONDS).returncode == 0

    def pactl(self, *args: str) -> str:
        result = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True,
                                timeout=PACTL_TIMEOUT_SECONDS)
        if result.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def load_sink(self) -> None:
        """The null sink (back): its monitor becomes the default input again."""
        self._sink_module = self.pactl("load-module", "module-null-sink", f"sink_name={self.sink}")
        self.pactl("set-default-source", f"{self.sink}.monitor")

    def unload_sink(self) -> None:
        """The input device vanishes, as a USB microphone pulled out does."""
        self.pactl("unload-module", self._sink_module)
        self._sink_module = None

    def play(self, path: Path) -> subprocess.Popen:
        """Start ``paplay`` into the sink; returns at once (the caller times from here)."""
        return subprocess.Popen(["paplay", "-d", self.sink, str(path)], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        terminate(self.process)
        self.process = None
