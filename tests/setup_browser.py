"""Test set-up: install Debian's chromium for the browser tests when it is missing (root only)."""
import os
import shutil
import subprocess
import sys

if shutil.which("chromium") or os.path.exists("/usr/bin/chromium"):
    sys.exit(0)
if os.geteuid() != 0 or not shutil.which("apt-get"):
    print("setup_browser: chromium missing and cannot apt-get it; browser tests will be skipped")
    sys.exit(0)
print("setup_browser: installing Debian's chromium for the browser tests ...")
subprocess.run(["apt-get", "update", "-qq"], check=False)
r = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
sys.exit(0 if r.returncode == 0 else 0)
