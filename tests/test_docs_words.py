"""The tracked text describes the software as it is, not the story of its making.

README, docs, the model card, configs, benchmarks, code and tests state what lsqface does and
how well, each figure with its command, date and machine; how a decision was reached is in
``git log``. This test fails on the words that tell that story: the numbered stretch of work a
figure came from, an issue number, a candidate model, an earlier model. Two technical uses stay
allowed: pytest's fixture scope of that name and the rasteriser's "candidate pixels" (the pixels
inside a triangle's bounding box that are tested against its edges); onnxruntime's inference class,
one word, never matches. The first word is spelled in pieces below (``WORK_PERIOD``), so that this
file, which has to name it, does not carry it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
WORK_PERIOD = "ses" "sion"

BANNED = {
    "a period of work": re.compile(rf"\b{WORK_PERIOD}s?\b", re.IGNORECASE),
    "an issue number": re.compile(r"\bissues? #\d+", re.IGNORECASE),
    "a candidate": re.compile(r"\bcandidates?\b(?! pixels?\b)", re.IGNORECASE),
    "an earlier model": re.compile(r"\bearlier models?\b", re.IGNORECASE),
}
ALLOWED = re.compile(rf"""scope=["']{WORK_PERIOD}["']""")


def banned_words(text: str) -> list[tuple[int, str, str]]:
    """(line number, what it tells, the line) of every banned word in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        line_without_allowed = ALLOWED.sub("", line)
        for reason, pattern in BANNED.items():
            if pattern.search(line_without_allowed):
                found.append((number, reason, line.strip()))
    return found


def tracked_text_files() -> list[Path]:
    """Every file git tracks that reads as UTF-8 text without NUL bytes, this test excepted."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    files = []
    for name in filter(None, listing.decode().split("\0")):
        path = REPOSITORY / name
        if path.resolve() == Path(__file__).resolve() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def test_no_tracked_text_tells_the_history_of_its_making():
    problems = [f"{path.relative_to(REPOSITORY)}:{number}: {reason}: {line[:160]}"
                for path in tracked_text_files()
                for number, reason, line in banned_words(path.read_text(encoding="utf-8"))]
    assert not problems, ("Describe the software as it is (the history is in git log):\n" + "\n".join(problems))


@pytest.mark.parametrize("text", [
    f"The model of {WORK_PERIOD} 7 was better.",
    f"{WORK_PERIOD.capitalize()}s 8-9 ran it on a slower machine.",
    "See issue #22.",
    "the candidate recipe",
    "Candidates were trained side by side.",
    "It beats the earlier model by 0.5 points.",
])
def test_each_banned_word_is_found(text):
    assert banned_words(text)


@pytest.mark.parametrize("text", [
    f'@pytest.fixture(scope="{WORK_PERIOD}")',
    f"runtime = onnxruntime.Inference{WORK_PERIOD.capitalize()}(path)",
    "how many candidate pixels to test at once",
    "every candidate pixel of every box",
    "max_candidates: int = _DEFAULT_MAX_CANDIDATES",
    "a model joined from an earlier report keeps that report's figure",
])
def test_technical_uses_are_allowed(text):
    assert not banned_words(text)
