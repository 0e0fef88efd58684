#!/usr/bin/env python3
"""Checks the relative links of the project's markdown: README.md and docs/*.md (or the files named
on the command line).

Every link [text](target), image ![alt](target), reference definition [name]: target and HTML
href= / src= outside code whose target is not a URL (http:, https:, mailto:, any scheme:) must name
a file or directory that exists, relative to the markdown file, inside the repository (in a git
checkout: a file git tracks or would track, not an ignored build output, so that the link also
resolves in a fresh clone); a #anchor
must be a heading of the target markdown file (GitHub's slug: the heading's text lower-cased,
characters other than letters, digits, '_', '-' and spaces dropped, spaces turned into '-', a
repeated slug numbered -1, -2, ...) or an explicit <a id=/name=>. Anchors into other kinds of file
are not checked. Fenced code blocks and inline code are skipped.

Usage: scripts/check_doc_links.py [FILE.md ...]. Prints one line per broken link, exit status 1 if
there is any, 0 otherwise. Standard library only.
"""
import pathlib
import re
import subprocess
import sys
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:.+?)\1")
# [text](target "title") and ![alt](target); text may hold one level of nested brackets
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ATTR = re.compile(r"""<[a-zA-Z][^>]*?\b(?:href|src)\s*=\s*["']([^"']*)["']""")
HTML_ANCHOR = re.compile(r"""<a\b[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def text_lines(path):
    """(line number, text) of the lines outside fenced code blocks, inline code removed."""
    fence = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and \
                    not line.strip()[len(m.group(1)):].strip():
                fence = None
            continue
        yield number, INLINE_CODE.sub("", line)


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                          # inline HTML
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


_anchor_cache = {}


def repository_files():
    """The files a fresh clone has (tracked, or new and not ignored) and their folders; None
    outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    files = set()
    for name in out.decode("utf-8", "surrogateescape").split("\0"):
        if name:
            rel = pathlib.PurePosixPath(name)
            files.add(rel)
            files.update(rel.parents)
    return files


_repository_files = repository_files()


def anchors(path):
    if path not in _anchor_cache:
        found, seen = set(), {}
        fence = None
        for line in path.read_text(encoding="utf-8").splitlines():
            m = FENCE.match(line)
            if fence is None and m:
                fence = m.group(1)
                continue
            if fence is not None:
                if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                    fence = None
                continue
            for a in HTML_ANCHOR.findall(line):
                found.add(a)
            h = HEADING.match(line)
            if h:
                base = slug(h.group(2))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
        _anchor_cache[path] = found
    return _anchor_cache[path]


def targets(path):
    for number, line in text_lines(path):
        for m in INLINE_LINK.finditer(line):
            yield number, m.group(1)
        m = REF_DEF.match(line)
        if m:
            yield number, m.group(1)
        for m in HTML_ATTR.finditer(line):
            yield number, m.group(1)


def check(path):
    problems = []
    for number, target in targets(path):
        target = target.strip()
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1]
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue
        where = f"{path.relative_to(ROOT)}:{number}: ({target})"
        file_part, _, anchor = target.partition("#")
        file_part = urllib.parse.unquote(file_part.split("?", 1)[0])
        if file_part:
            if file_part.startswith("/"):
                problems.append(f"{where}: an absolute path; write it relative to the file")
                continue
            dest = (path.parent / file_part).resolve()
            try:
                dest.relative_to(ROOT)
            except ValueError:
                problems.append(f"{where}: points outside the repository")
                continue
            if not dest.exists():
                problems.append(f"{where}: no such file {dest.relative_to(ROOT)}")
                continue
            rel = pathlib.PurePosixPath(dest.relative_to(ROOT).as_posix())
            if _repository_files is not None and rel not in _repository_files:
                problems.append(f"{where}: {rel} is not in the repository (ignored or untracked)")
                continue
        else:
            dest = path
        if anchor and dest.is_file() and dest.suffix.lower() in (".md", ".markdown"):
            anchor = urllib.parse.unquote(anchor)
            if anchor not in anchors(dest):
                problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return problems


def main(argv):
    if argv:
        files = [pathlib.Path(a).resolve() for a in argv]
    else:
        files = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    problems, links = [], 0
    for f in files:
        links += sum(1 for _ in targets(f))
        problems += check(f)
    for p in problems:
        print(p)
    print(f"check_doc_links: {len(files)} files, {links} links, {len(problems)} broken",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
