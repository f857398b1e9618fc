"""How to submit: the README's "Submitting a method" section, rendered from the same file."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from leaderboard import ui

SUBMIT = Path(__file__).resolve().parent.parent / "submit.md"

ui.header("How to submit a method",
          "Write one Python file, run it on the suite, and it appears on this leaderboard. "
          "(The same text is the README's \"Submitting a method\" section.)")
st.markdown(SUBMIT.read_text(encoding="utf-8"))
