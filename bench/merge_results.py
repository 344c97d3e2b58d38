"""Fold the machine slots of a results file measured elsewhere (a GPU session's results.json)
into bench/results.json, then regenerate the README table.

    python bench/merge_results.py FILE                  # into bench/results.json, then README.md
    python bench/merge_results.py FILE --into R --readme M   # other files (tests)
    python bench/merge_results.py FILE --no-report      # merge only

For each machine key of FILE, its benchmark groups replace the same groups of that machine in
the target (as a benchmark run replaces only its own group's entries) and its machine record
replaces the target's; that machine's other groups and every other machine's slot are kept as
they are. FILE must use the same schema (common.SCHEMA). Tiny-mode entries (a dry run) are
refused: they measure nothing.

Commit. The GPU machine gets a copy of the working tree without .git, so its entries carry no
commit; bench_gpu.py records `tree_digest` instead (`tree_digest` below: git's blob ids of the
files under src/ and bench/, hashed). An entry without a commit but with a digest is given the
commit among the last COMMITS_SEARCHED of HEAD whose tree has that digest (dirty: false), or
HEAD with dirty: true when the digest is that of this working tree; otherwise it keeps
commit: null and the merge says so.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

from common import COMMITTED_RESULTS, REPO, read_results, write_json

DIGEST_DIRS = ("src", "bench")
DIGEST_EXCLUDE = {"bench/results.json"}
COMMITS_SEARCHED = 50


def _counted(path: str) -> bool:
    """Whether a path (relative, with /) is part of the digest: under DIGEST_DIRS, not the
    results file, not a build or cache artefact."""
    parts = path.split("/")
    return (
        parts[0] in DIGEST_DIRS
        and path not in DIGEST_EXCLUDE
        and "__pycache__" not in parts
        and not any(p.endswith(".egg-info") for p in parts)
        and not path.endswith((".pyc", ".tmp"))
    )


def _digest(blobs: dict[str, str]) -> str:
    h = hashlib.sha256()
    for path in sorted(blobs):
        h.update(f"{path}\0{blobs[path]}\n".encode())
    return h.hexdigest()[:16]


def blob_id(data: bytes) -> str:
    """git's id of a file's content (what `git hash-object` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree_digest(root: Path = REPO) -> str:
    """A digest of the files under src/ and bench/ of a working tree, by their git blob ids;
    needs no git (the GPU machine's copy has no .git)."""
    blobs = {}
    for d in DIGEST_DIRS:
        for f in (root / d).rglob("*"):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and not f.is_symlink() and _counted(rel):
                blobs[rel] = blob_id(f.read_bytes())
    return _digest(blobs)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def commit_digest(commit: str) -> str | None:
    """tree_digest of a commit's tree (None without git)."""
    listing = _git("ls-tree", "-r", commit, "--", *DIGEST_DIRS)
    if listing is None:
        return None
    blobs = {}
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "blob" and mode != "120000" and _counted(path):
            blobs[path] = sha
    return _digest(blobs)


def find_commit(digest: str) -> tuple[str | None, bool | None]:
    """(commit, dirty) whose files under src/ and bench/ have this digest (see module docstring)."""
    commits = (_git("rev-list", "-n", str(COMMITS_SEARCHED), "HEAD") or "").split()
    for c in commits:
        if commit_digest(c) == digest:
            return c, False
    if commits and tree_digest() == digest:
        return commits[0], True
    return None, None


def merge(source: dict, target: dict) -> list[str]:
    """Put source's machine slots into target (in place), group by group (module docstring);
    returns the keys merged."""
    keys = []
    for key, slot in source["machines"].items():
        tiny = [e["name"] for e in slot["benchmarks"] if e.get("tiny")]
        if tiny:
            raise SystemExit(f"{key}: {len(tiny)} tiny-mode entries (a dry run, e.g. {tiny[0]!r}); not merged")
        digests = {e["tree_digest"] for e in slot["benchmarks"] if e.get("commit") is None and e.get("tree_digest")}
        found = {d: find_commit(d) for d in digests}
        for e in slot["benchmarks"]:
            if e.get("commit") is None and e.get("tree_digest") in found:
                e["commit"], e["dirty"] = found[e["tree_digest"]]
        for d, (c, dirty) in found.items():
            if c is None:
                where = f"no commit of the last {COMMITS_SEARCHED} matches; commit left null"
            else:
                where = f"commit {c[:7]}" + (" with uncommitted changes (this working tree)" if dirty else "")
            print(f"{key}: tree digest {d}: {where}")
        groups = {e.get("group") for e in slot["benchmarks"]}
        kept = [e for e in target["machines"].get(key, {}).get("benchmarks", []) if e.get("group") not in groups]
        target["machines"][key] = {**slot, "benchmarks": kept + slot["benchmarks"]}
        keys.append(key)
    target["machines"] = dict(sorted(target["machines"].items()))
    return keys


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", type=Path, help="results file to fold in (e.g. the GPU session's results.json)")
    p.add_argument("--into", type=Path, default=COMMITTED_RESULTS, help="results file to update")
    p.add_argument("--readme", type=Path, default=None, help="README whose table to regenerate (default README.md)")
    p.add_argument("--no-report", action="store_true", help="do not regenerate the README table")
    args = p.parse_args(argv)
    source, target = read_results(args.file), read_results(args.into)
    keys = merge(source, target)
    if not keys:
        print(f"{args.file} holds no machine slot; {args.into} unchanged")
        return 1
    write_json(args.into, target)
    for key in keys:
        print(f"merged {len(source['machines'][key]['benchmarks'])} entries of {key} into {args.into}")
    if args.no_report:
        return 0
    import report

    return report.main(["--results", str(args.into), *(["--readme", str(args.readme)] if args.readme else [])])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
