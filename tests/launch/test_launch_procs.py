"""The supervisor leaves no process behind (also ones in sessions of their own, like torchrun's ranks),
passes Ctrl-C on as SIGINT, notices a dead server; the health check waits, fails fast, times out."""

from __future__ import annotations

import http.server
import signal
import sys
import textwrap
import threading
import time

import psutil
import pytest
from launch_helpers import free_port

from mmr1.launch.procs import ChildExited, Supervisor
from mmr1.launch.vllm_server import ServerNotReady, wait_healthy

# A parent that starts a grandchild in a new session (as torchrun does with its ranks), prints the
# grandchild's pid, and sleeps. Both record the signal they get in files under argv[1].
TREE = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    out = sys.argv[1]
    def record(name):
        def handler(signum, frame):
            open(os.path.join(out, name), "w").write(signal.Signals(signum).name)
            sys.exit(0)
        return handler
    if len(sys.argv) > 2:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # survives its parent's signals: must be killed
        time.sleep(600)
    signal.signal(signal.SIGTERM, record("parent"))
    signal.signal(signal.SIGINT, record("parent"))
    child = subprocess.Popen([sys.executable, __file__, out, "child"], start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(600)
""")


def _start_tree(sup: Supervisor, tmp_path):
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    log = tmp_path / "tree.log"
    proc = sup.start("tree", [sys.executable, str(script), str(tmp_path)], log_path=log)
    for _ in range(100):
        if log.exists() and log.read_text().strip():
            return proc, int(log.read_text().split()[0])
        time.sleep(0.1)
    raise AssertionError("the test tree did not start")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_leaves_nothing_behind(tmp_path):
    with Supervisor(grace_s=2, poll_s=0.1) as sup:
        proc, grandchild = _start_tree(sup, tmp_path)
        sup.children[0].remember_descendants()
    assert proc.poll() is not None and _gone(grandchild)
    assert (tmp_path / "parent").read_text() == "SIGTERM"


def test_ctrl_c_is_passed_on_as_sigint(tmp_path):
    with pytest.raises(KeyboardInterrupt), Supervisor(grace_s=2, poll_s=0.1) as sup:
        proc, grandchild = _start_tree(sup, tmp_path)
        sup.children[0].remember_descendants()
        raise KeyboardInterrupt
    assert (tmp_path / "parent").read_text() == "SIGINT"
    assert _gone(grandchild)


def test_a_dead_side_process_stops_the_wait(tmp_path):
    with pytest.raises(ChildExited, match="server exited with code 3"), Supervisor(grace_s=2, poll_s=0.1) as sup:
        sup.start("server", [sys.executable, "-c", "import sys; sys.exit(3)"])
        main = sup.start("trainers", [sys.executable, "-c", "import time; time.sleep(600)"])
        sup.wait(main)
    assert main.poll() is not None


def test_sigterm_to_mmr1_unwinds_like_ctrl_c(tmp_path):
    from mmr1.launch.procs import Terminated

    with pytest.raises(Terminated), Supervisor(grace_s=2, poll_s=0.1) as sup:
        proc, _ = _start_tree(sup, tmp_path)
        signal.raise_signal(signal.SIGTERM)
    assert proc.poll() is not None and (tmp_path / "parent").read_text() == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is not Supervisor._on_signal  # handler restored


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # http.server's method name
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_wait_healthy(tmp_path):
    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}", 5, interval_s=0.1) < 5
    finally:
        server.shutdown()
    with pytest.raises(ServerNotReady, match="within 1 s"):
        wait_healthy(f"http://127.0.0.1:{free_port()}", 1, interval_s=0.2)
    log = tmp_path / "server.log"
    log.write_text("CUDA out of memory\n")
    dead = psutil.Popen([sys.executable, "-c", "import sys; sys.exit(1)"])
    dead.wait()
    with pytest.raises(ServerNotReady, match="(?s)exited with code 1.*CUDA out of memory"):
        wait_healthy(f"http://127.0.0.1:{free_port()}", 60, proc=dead, log_path=log, interval_s=0.1)
