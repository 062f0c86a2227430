#!/usr/bin/env python3
"""Checks that every relative link in the documentation resolves: the file or directory
it names exists, and its #anchor (in this file or another Markdown file) is a heading
there, spelt as GitHub spells heading anchors. Links to other sites are not fetched.
Anchors are accepted into Markdown files only: a line anchor into source (#L12) drifts
with every edit, so name the file and the function instead.

usage: python3 .ci/check-links.py [FILE.md ...]
       (default: README.md, docs/*.md and bench/README.md, from the repository's root)

Prints each broken link as FILE:LINE: TARGET: REASON and exits 1 if there is one.
Standard library only, so CI runs it before any tool is installed.
"""

import functools
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = ["README.md", "docs/*.md", "bench/README.md"]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, …


def prose_lines(text):
    """The lines outside fenced code blocks, numbered from 1, inline code blanked out."""
    fenced = None
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if fence:
            if fenced is None:
                fenced = fence.group(1)
            elif fence.group(1) == fenced:
                fenced = None
            continue
        if fenced is None:
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading: its text as rendered, lower-cased, without
    punctuation but for hyphens and underscores, spaces turned into hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(path):
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 … for repeats."""
    seen = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if not heading:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def targets(path):
    """(line number, target) of every link in a Markdown file, code left out."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        for match in INLINE_LINK.finditer(line):
            yield number, match.group(1)
        definition = REFERENCE_DEF.match(line)
        if definition:
            yield number, definition.group(1)


def problem(source, target):
    """Why a link does not resolve, or None when it does."""
    if EXTERNAL.match(target) or target.startswith("//"):
        return None
    location, _, anchor = target.partition("#")
    if location:
        if location.startswith("/"):
            return "absolute paths do not resolve on the code host; use a relative link"
        resolved = (source.parent / location).resolve()
        try:
            resolved.relative_to(ROOT)
        except ValueError:
            return "points outside the repository"
        if not resolved.exists():
            return f"no such file or directory: {resolved.relative_to(ROOT)}"
    else:
        resolved = source
    if anchor:
        if resolved.is_dir() or resolved.suffix.lower() != ".md":
            return "an anchor into a file that is not Markdown"
        if anchor not in anchors(resolved):
            return f"no heading with the anchor #{anchor} in {resolved.relative_to(ROOT)}"
    return None


def main(arguments):
    patterns = arguments or DEFAULT_FILES
    files = []
    for pattern in patterns:
        matched = sorted(ROOT.glob(pattern)) if not Path(pattern).is_absolute() else [Path(pattern)]
        if not matched:
            print(f"check-links: {pattern} matches no file", file=sys.stderr)
            return 1
        files.extend(path.resolve() for path in matched)
    broken = 0
    checked = 0
    for path in files:
        for number, target in targets(path):
            checked += 1
            reason = problem(path, target)
            if reason:
                broken += 1
                print(f"{path.relative_to(ROOT)}:{number}: {target}: {reason}")
    print(f"check-links: {checked} links in {len(files)} files, {broken} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
