"""Scoring helpers shared by the tasks' `metric.py`: numbers read out of text or program output."""

from __future__ import annotations

import math
import re

TOLERANCE = 1e-3  # the paper's GSM-Hard protocol: a numeric answer is right within 1e-3

# An optionally signed number with optional thousands separators and decimals: "-3", "1,234", "2.5".
# A sentence's full stop ("is 12.") is not a decimal point: a fraction needs a digit after the dot.
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def cut_at_stops(text: str, stops: list[str] | tuple[str, ...]) -> str:
    """`text` up to the first of `stops` (what a generation that ran past its end would leave)."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


_FENCED = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def solution_program(response: str) -> str:
    """A response that defines `solution()` (PAL style, in a ``` block or bare) as a program that
    prints what it returns; "" (no program) for a blank response. The first block that defines
    `solution` is taken, else the first block, else the whole response: a response without the
    function then fails when run, as it should."""
    blocks = _FENCED.findall(response)
    code = next((b for b in blocks if "def solution" in b), blocks[0] if blocks else response)
    if not code.strip():
        return ""
    return f"{code.rstrip()}\n\nprint(solution())\n"


def last_number(text: str) -> float | None:
    """The last number in `text` ("... = 12. The answer is 12." -> 12.0), or None if there is none."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def matches(value: float | None, answer: float) -> bool:
    return value is not None and math.isfinite(value) and abs(value - float(answer)) <= TOLERANCE


def score_execution(doc: dict, results: list[dict]) -> dict[str, float]:
    """Metrics of one document whose response went through `filters.ExecuteProgram`.

    A program counts only if it exited 0 in time: one that printed the answer and then crashed or
    hung is wrong, as in the paper's (PAL-style) GSM-Hard protocol."""
    run = results[0]
    return {
        "exec_accuracy": float(run["ok"] and matches(run["value"], doc["answer"])),
        "program_ran": float(run["ok"]),
    }
