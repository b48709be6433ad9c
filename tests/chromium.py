"""Where Debian's Chromium is and the flags it needs on these machines (for the browser tests).

Without the background-networking flags Chromium's connections are refused by the closed
network, many at a time; ``KRONBOOK_CHROMIUM`` names another binary.
"""

import os
import shutil

CHROMIUM = os.environ.get("KRONBOOK_CHROMIUM") or shutil.which("chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
