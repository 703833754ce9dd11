"""``carecore lab`` serves the app with Voila in a process of its own: stopping ``carecore lab`` as a service
manager or ``kill`` does (SIGTERM) must stop Voila too, not leave it serving with its kernels."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url):
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except urllib.error.HTTPError:   # (any answer: it serves)
        return True
    except OSError:
        return False


def test_a_sigterm_to_carecore_lab_stops_voila(tmp_path):
    (tmp_path / "denoising3d").mkdir()   # (a data root with the demo already: nothing written)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen([sys.executable, "-m", "carecore.cli", "lab", "--data-root", str(tmp_path), "--port",
                             str(port), "--ip", "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), start_new_session=True)
    try:
        t = time.time()
        while not _answers(url):
            assert proc.poll() is None and time.time() - t < 120, proc.stdout.read().decode()[-2000:]
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)   # (to carecore alone, not its process group)
        assert proc.wait(timeout=60) in (0, 128 + signal.SIGTERM)   # (Voila's own status: its stop, or the signal's)
        t = time.time()
        while _answers(url):   # Voila ended with it
            assert time.time() - t < 30, "Voila still serves after carecore lab was stopped"
            time.sleep(0.5)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # (whatever is left of its group)
        except ProcessLookupError:
            pass
