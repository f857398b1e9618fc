"""Start the site as `soupbench leaderboard` does: Streamlit's own `run`, in this process.

In-process rather than a child `streamlit run`: the leaderboard's modules (pandas, Altair, the
query layer, the task metadata) are imported and every suite's data loaded (`snapshot.prefetch`)
while the server starts, so the first visitor waits for neither; and a signal to
`soupbench leaderboard` reaches the server itself.
"""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
PRIMARY_COLOR = "#1f6f8b"  # calm blue-teal: the default red reads as an error on a results page
WARM = ("pandas", "altair", "leaderboard.queries", "leaderboard.ranking", "leaderboard.charts",
        "leaderboard.stats", "leaderboard.ui", "benchmark.taskinfo")


def streamlit_argv(url: str, port: int, source: str | None = None) -> list[str]:
    """The `streamlit run` command line for the site (the URL, and what it holds, go to the script
    after `--`).

    `client.toolbarMode` "viewer": a public board is for viewers, so the toolbar keeps only
    viewer items (print, theme) and hides the developer ones (Deploy, rerun, clear cache), which
    Streamlit's default "auto" shows to any visitor on localhost.
    """
    return ["streamlit", "run", str(APP), "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--theme.primaryColor", PRIMARY_COLOR,
            "--client.toolbarMode", "viewer",
            "--", "--db", url, *(["--source", source] if source else [])]


def serve(url: str, port: int, source: str | None = None) -> None:
    """Serve until interrupted; `url` must already be known to be readable."""
    from streamlit.web import cli as streamlit_cli

    for module in WARM:
        importlib.import_module(module)
    # Load every suite while the server starts, so the first visitor does not wait for it.
    from leaderboard import snapshot

    threading.Thread(target=snapshot.prefetch, args=(url,), name="soupbench-prefetch", daemon=True).start()
    argv = streamlit_argv(url, port, source)
    sys.argv = argv
    streamlit_cli.main(args=argv[1:], prog_name="streamlit")
