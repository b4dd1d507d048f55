"""The console script ends at once after a command: atexit handlers and all output kept, the
interpreter's teardown skipped, and a thread still running joined as in a normal exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import atexit, sys, threading, time
    from eocausal.workflows.fast_exit import exit_now

    class Finalised:
        def __del__(self):
            print("teardown ran", flush=True)

    kept = Finalised()  # a module global: freed only by the interpreter's teardown
    atexit.register(print, "atexit ran")
    if sys.argv[1] == "thread":
        threading.Thread(target=lambda: (time.sleep(0.5), print("thread done"))).start()
    print("x" * 200_000)  # more than a pipe holds: must all arrive
    sys.stdout.write("unflushed tail")
    exit_now(int(sys.argv[2]))
""")


@pytest.mark.parametrize("code", [0, 2, 130])
def test_exit_now_keeps_output_and_atexit_but_skips_teardown(code):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "plain", str(code)],
                          capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert proc.returncode == code
    assert lines[0] == "x" * 200_000
    assert lines[1:] == ["unflushed tailatexit ran"]  # atexit after the main code, teardown never


def test_a_thread_still_running_gets_the_normal_exit():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "thread", "3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "thread done" in proc.stdout and "atexit ran" in proc.stdout


def test_console_script_exit_status_and_messages(tmp_path):
    missing = tmp_path / "none.parquet"
    proc = subprocess.run([sys.executable, "-m", "eocausal.workflows.cli", "ingest", "--units",
                           str(missing), "--imagery", str(missing), "--out",
                           str(tmp_path / "t.zarr")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"Units file '{missing}' does not exist" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "eocausal.workflows.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ingest" in proc.stdout and proc.stdout.endswith("\n")
