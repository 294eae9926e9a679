"""Keep TensorFlow's own log lines (CUDA probes, oneDNN and CPU-feature notes, the TFLite
interpreter's delegate notice) off the terminal.

TensorFlow's C++ runtime writes them straight to file descriptor 2, and
``TF_CPP_MIN_LOG_LEVEL`` does not silence them all (absl logs before it is
read). So the command line points descriptor 2 at a pipe whose reader drops
lines in TensorFlow's log formats and passes everything else through, while
Python's own ``sys.stderr`` (errors, progress notes) writes to the terminal
directly. ``--verbose`` or ``KERASGEN_VERBOSE=1`` leaves everything as it is.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

VERBOSE_ENV = "KERASGEN_VERBOSE"
TF_LOG_LINE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\]"  # absl: I0000 00:00:17.9 port.cc:153]
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "  # TensorFlow's older format
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .*rebuild TensorFlow"
    rb"|INFO: Created TensorFlow Lite \w+ delegate for \w+\.$)"  # TFLite's (and LiteRT's)
)


def verbose_requested(argv=None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--verbose" in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_native_logs() -> None:
    """Filter descriptor 2 as the module docstring says (once per process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if verbose_requested() or getattr(quiet_native_logs, "installed", False):
        return
    quiet_native_logs.installed = True
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(
        terminal, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )

    def forward():
        pending = b""
        with open(read_end, "rb", buffering=0) as pipe:
            for block in iter(lambda: pipe.read(65536), b""):
                *lines, pending = (pending + block).split(b"\n")
                kept = [line + b"\n" for line in lines if not TF_LOG_LINE.match(line)]
                if kept:
                    os.write(terminal, b"".join(kept))
        if pending and not TF_LOG_LINE.match(pending):
            os.write(terminal, pending)

    reader = threading.Thread(target=forward, name="kerasgen-native-logs", daemon=True)
    reader.start()

    def restore():
        # Descriptor 2 back to the terminal closes the pipe's last writer, so the
        # reader passes on what is left and ends.
        os.dup2(terminal, 2)
        reader.join(timeout=2)

    atexit.register(restore)


def run_command(command) -> None:
    """Run a Click command as a program: TensorFlow's log lines filtered first; a closed
    pipe on standard output (``kerasgen sample | head``) ends it quietly."""
    from kerasgen_cli.errors import closed_pipe

    quiet_native_logs()
    try:
        command()
    except BrokenPipeError:
        closed_pipe()
