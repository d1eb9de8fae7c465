#!/usr/bin/env python3
"""Checks that Silo's documentation holds together (make docs-check).

    hack/check-docs.py SILO_BINARY     check the repository this script lives in
    hack/check-docs.py --self-test     prove the checks fail on a broken doc tree

Fails (exit 1, one line per problem) when:
  (a) a relative link in a Markdown file (README.md, CONTRIBUTING.md, docs/**, any other
      *.md git tracks) does not resolve to a file or directory, or its #anchor matches no
      heading of the target file (same-file #anchors too). Anchors follow GitHub's rules:
      the heading's text, lowercased, punctuation but - and _ dropped, each space made -,
      and a repeated heading gets -1, -2, ...;
  (b) an alert of the PrometheusRule has no runbook_url, or one that is not
      RUNBOOK_BASE/docs/runbooks.md#<its own heading>, or that heading is missing;
  (c) a --flag that `silo run --help` prints is not in docs/configuration.md, or a row of
      that page's tables names a flag `silo run --help` does not print.

Python 3 standard library only.
"""

import os
import re
import subprocess
import sys
import tempfile
import textwrap
import unicodedata
import urllib.parse

# The one base every alert's runbook_url is built on (docs/operating.md says how to override
# it in an overlay). Change it here and in prometheusrule.yaml together.
RUNBOOK_BASE = "https://github.com/silo-dev/silo/blob/main"
RUNBOOKS = "docs/runbooks.md"
CONFIGURATION = "docs/configuration.md"
PROMETHEUS_RULE = "manifests/components/monitoring/prometheusrule.yaml"

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target may be wrapped in <>, and may carry a title.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(\S+)")
HTML_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")


def slug(heading_text):
    """GitHub's anchor for a heading's text (without the duplicate suffix)."""
    text = INLINE_CODE.sub(lambda m: m.group(2).strip(), heading_text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "-_ " or category[0] in "LN" or category == "Mn":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def strip_code_spans(line):
    return INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)


def markdown_lines(text):
    """(line number, line) of the text outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        yield number, line


def anchors_of(text):
    """Every anchor a Markdown text defines: its headings' slugs (duplicates numbered), and
    explicit <a name/id> anchors."""
    anchors, seen = set(), {}
    previous = None
    for _, line in markdown_lines(text):
        heading = None
        m = ATX_HEADING.match(line)
        if m:
            heading = m.group(2) or ""
        elif previous and previous.strip() and SETEXT_UNDERLINE.match(line) and not ATX_HEADING.match(previous):
            if not re.match(r"^ {0,3}([-*_])( *\1){2,} *$", previous) and not previous.lstrip().startswith(("|", "-", "*", ">")):
                heading = previous.strip()
        if heading is not None:
            base = slug(heading)
            count = seen.get(base, 0)
            seen[base] = count + 1
            anchors.add(base if count == 0 else f"{base}-{count}")
        for a in HTML_ANCHOR.findall(line):
            anchors.add(a)
        previous = line
    return anchors


def links_of(text):
    """(line number, target) of every link in a Markdown text, code excluded."""
    for number, line in markdown_lines(text):
        m = REFERENCE_DEF.match(line)
        if m:
            yield number, m.group(1)
            continue
        for m in INLINE_LINK.finditer(strip_code_spans(line)):
            target = m.group(1)
            if target.startswith("<") and target.endswith(">"):
                target = target[1:-1]
            yield number, target


def markdown_files(root):
    """The Markdown files to check: what git tracks (or would: untracked but not ignored), or
    every *.md under root when root is not a git work tree."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.md"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout
        files = sorted({f for f in out.split("\n") if f and os.path.isfile(os.path.join(root, f))})
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "target"]
        for name in names:
            if name.endswith(".md"):
                found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


class Checker:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.problems = []
        self._anchors = {}
        self.counts = {"files": 0, "links": 0, "runbook_urls": 0, "flags": 0}

    def problem(self, where, message):
        self.problems.append(f"{where}: {message}")

    def read(self, relative):
        with open(os.path.join(self.root, relative), encoding="utf-8") as f:
            return f.read()

    def anchors(self, relative):
        if relative not in self._anchors:
            self._anchors[relative] = anchors_of(self.read(relative))
        return self._anchors[relative]

    # (a) links and anchors
    def check_links(self):
        for source in markdown_files(self.root):
            self.counts["files"] += 1
            text = self.read(source)
            for number, target in links_of(text):
                self.check_link(source, number, target)

    def check_link(self, source, number, target):
        where = f"{source}:{number}"
        if not target or SCHEME.match(target) or target.startswith("//"):
            return  # an absolute URL (https:, mailto:) is not ours to resolve
        self.counts["links"] += 1
        path, _, anchor = target.partition("#")
        path = urllib.parse.unquote(path)
        anchor = urllib.parse.unquote(anchor)
        if path == "":
            resolved = source
        elif path.startswith("/"):
            resolved = os.path.normpath(path.lstrip("/"))
        else:
            resolved = os.path.normpath(os.path.join(os.path.dirname(source), path))
        full = os.path.join(self.root, resolved)
        if resolved.startswith(".."):
            self.problem(where, f"link {target!r} leaves the repository")
            return
        if not os.path.exists(full):
            self.problem(where, f"link {target!r}: {resolved} does not exist")
            return
        if not anchor:
            return
        if os.path.isdir(full):
            self.problem(where, f"link {target!r}: #{anchor} on a directory")
        elif resolved.endswith(".md"):
            if anchor not in self.anchors(resolved):
                self.problem(where, f"link {target!r}: {resolved} has no heading with the anchor #{anchor}")

    # (b) runbook_url of every alert
    def check_runbooks(self):
        rule_file = PROMETHEUS_RULE
        if not os.path.isfile(os.path.join(self.root, rule_file)):
            self.problem(rule_file, "missing")
            return
        alerts = []  # [name, line, [(line, url)]]
        for number, line in enumerate(self.read(rule_file).split("\n"), 1):
            m = re.match(r"^\s*-\s+alert:\s*(\S+)", line)
            if m:
                alerts.append([m.group(1), number, []])
                continue
            m = re.match(r"^\s*runbook_url:\s*['\"]?([^'\"\s]+)", line)
            if m:
                if not alerts:
                    self.problem(f"{rule_file}:{number}", "runbook_url outside an alert")
                else:
                    alerts[-1][2].append((number, m.group(1)))
        if not alerts:
            self.problem(rule_file, "no alerts found")
        runbook_anchors = self.anchors(RUNBOOKS) if os.path.isfile(os.path.join(self.root, RUNBOOKS)) else None
        if runbook_anchors is None:
            self.problem(RUNBOOKS, "missing")
        prefix = f"{RUNBOOK_BASE}/{RUNBOOKS}#"
        for name, number, urls in alerts:
            if not urls:
                self.problem(f"{rule_file}:{number}", f"alert {name} has no runbook_url")
                continue
            if len(urls) > 1:
                self.problem(f"{rule_file}:{urls[1][0]}", f"alert {name} has more than one runbook_url")
            url_line, url = urls[0]
            self.counts["runbook_urls"] += 1
            where = f"{rule_file}:{url_line}"
            if not url.startswith(prefix):
                self.problem(where, f"alert {name}: runbook_url {url} does not start with {prefix}")
                continue
            anchor = url[len(prefix):]
            if runbook_anchors is not None and anchor not in runbook_anchors:
                self.problem(where, f"alert {name}: runbook_url {url}: {RUNBOOKS} has no heading #{anchor}")
            elif anchor != slug(name):
                self.problem(where, f"alert {name}: runbook_url {url} points at #{anchor}, not its own heading #{slug(name)}")

    # (c) every flag of `silo run --help` on the configuration page
    def check_flags(self, silo):
        try:
            run = subprocess.run([silo, "run", "--help"], capture_output=True, text=True, timeout=60)
        except OSError as err:
            self.problem(silo, f"cannot run `silo run --help`: {err}")
            return
        if run.returncode != 0:
            self.problem(silo, f"`silo run --help` exited {run.returncode}: {run.stderr.strip()}")
            return
        printed = set()
        for line in run.stdout.split("\n"):
            m = re.match(r"^\s*(?:-\w,\s*)?(--[a-z0-9][a-z0-9-]*)", line)
            if m and m.group(1) not in ("--help", "--version"):
                printed.add(m.group(1))
        if not printed:
            self.problem(silo, "`silo run --help` printed no flags")
            return
        if not os.path.isfile(os.path.join(self.root, CONFIGURATION)):
            self.problem(CONFIGURATION, "missing")
            return
        page = self.read(CONFIGURATION)
        mentioned = set(FLAG.findall(page))
        for flag in sorted(printed):
            self.counts["flags"] += 1
            if flag not in mentioned:
                self.problem(CONFIGURATION, f"{flag} (printed by `silo run --help`) is not documented")
        for number, line in enumerate(page.split("\n"), 1):
            m = re.match(r"^\|\s*`(--[a-z0-9][a-z0-9-]*)`", line)
            if m and m.group(1) not in printed:
                self.problem(f"{CONFIGURATION}:{number}", f"{m.group(1)} is documented but `silo run --help` does not print it")


def check(root, silo):
    checker = Checker(root)
    checker.check_links()
    checker.check_runbooks()
    checker.check_flags(silo)
    return checker


def self_test():
    """Builds a small doc tree with one problem of each kind, and a clean one, and checks
    that the checker reports exactly the planted problems."""
    failures = []

    def expect(condition, message):
        if not condition:
            failures.append(message)

    # Slugs, as GitHub makes them.
    for heading, expected in [
        ("Deletion: accounts are closed only when you say so twice", "deletion-accounts-are-closed-only-when-you-say-so-twice"),
        ("Running `silo run` yourself", "running-silo-run-yourself"),
        ("The AWS budget's burst", "the-aws-budgets-burst"),
        ("What IAM enforces, and what Silo does", "what-iam-enforces-and-what-silo-does"),
        ("snake_case and kebab-case", "snake_case-and-kebab-case"),
        ("A  [link](x.md) here", "a--link-here"),
    ]:
        expect(slug(heading) == expected, f"slug({heading!r}) = {slug(heading)!r}, expected {expected!r}")
    expect(anchors_of("# A\n## A\n### A\n") == {"a", "a-1", "a-2"}, "duplicate headings are not numbered -1, -2")
    expect(anchors_of("```\n# not a heading\n```\n") == set(), "a heading inside a code block was counted")

    help_text = textwrap.dedent("""\
        Usage: silo run [OPTIONS]

        Options:
              --email-template <EMAIL_TEMPLATE>
                  Email for Tenants without spec.email [env: SILO_EMAIL_TEMPLATE=]
              --lease-name <LEASE_NAME>
                  Name of the leader-election Lease, in --namespace [env: SILO_LEASE_NAME=]
              --namespace <NAMESPACE>
                  Namespace Silo runs in [env: POD_NAMESPACE=]
          -h, --help
                  Print help
        """)
    runbook_rule = textwrap.dedent(f"""\
        spec:
          groups:
            - name: silo
              rules:
                - alert: SiloGood
                  annotations:
                    runbook_url: {RUNBOOK_BASE}/docs/runbooks.md#silogood
                - alert: SiloMissingAnchor
                  annotations:
                    runbook_url: {RUNBOOK_BASE}/docs/runbooks.md#silomissinganchor
                - alert: SiloNoUrl
                  annotations:
                    summary: nothing
                - alert: SiloOtherBase
                  annotations:
                    runbook_url: https://elsewhere.example/docs/runbooks.md#siloothersbase
        """)
    clean_rule = textwrap.dedent(f"""\
        spec:
          groups:
            - name: silo
              rules:
                - alert: SiloGood
                  annotations:
                    runbook_url: {RUNBOOK_BASE}/docs/runbooks.md#silogood
        """)
    broken = {
        "README.md": textwrap.dedent("""\
            # Title
            ## Usage
            ## Usage
            [fine](docs/guide.md#first-steps) [dup](#usage-1) [web](https://example.com/x#y)
            [missing file](docs/nowhere.md)
            [missing anchor](docs/guide.md#no-such-heading)
            [missing same-file anchor](#no-such-section)
            `[in code](docs/ignored.md)`
            ```
            [in a block](docs/ignored-too.md)
            ```
            """),
        "docs/guide.md": "# Guide\n\n## First steps\n\n[back](../README.md#usage) [up](../README.md#title)\n",
        "docs/runbooks.md": "# Runbooks\n\n## SiloGood\n\n## SiloOtherBase\n",
        "docs/configuration.md": "| `--email-template` | x |\n| `--stale-flag` | gone |\n\n`--namespace`\n",
        PROMETHEUS_RULE: runbook_rule,
    }
    clean = dict(broken)
    clean["README.md"] = "# Title\n## Usage\n## Usage\n[fine](docs/guide.md#first-steps) [dup](#usage-1)\n"
    clean["docs/configuration.md"] = "| `--email-template` | x |\n| `--lease-name` | y |\n| `--namespace` | z |\n"
    clean[PROMETHEUS_RULE] = clean_rule

    def build(tree, directory):
        for relative, content in tree.items():
            path = os.path.join(directory, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
        silo = os.path.join(directory, "fake-silo")
        with open(silo, "w", encoding="utf-8") as f:
            f.write(f"#!{sys.executable}\nimport sys\nassert sys.argv[1:] == ['run', '--help']\nprint({help_text!r})\n")
        os.chmod(silo, 0o755)
        return silo

    with tempfile.TemporaryDirectory() as broken_dir, tempfile.TemporaryDirectory() as clean_dir:
        problems = check(broken_dir, build(broken, broken_dir)).problems
        print("self-test: the broken tree's problems, as reported:")
        for p in problems:
            print(f"  {p}")
        wanted = [
            ("a missing file", "README.md:5: link 'docs/nowhere.md'"),
            ("a missing anchor in another file", "README.md:6: link 'docs/guide.md#no-such-heading'"),
            ("a missing same-file anchor", "README.md:7: link '#no-such-section'"),
            ("a runbook_url whose anchor is missing", "alert SiloMissingAnchor: runbook_url"),
            ("an alert without runbook_url", "alert SiloNoUrl has no runbook_url"),
            ("a runbook_url on another base", "alert SiloOtherBase: runbook_url https://elsewhere.example"),
            ("an undocumented flag", "--lease-name (printed by `silo run --help`) is not documented"),
            ("a documented flag silo does not have", "--stale-flag is documented but"),
        ]
        for what, needle in wanted:
            expect(any(needle in p for p in problems), f"not reported: {what} ({needle})")
        expect(len(problems) == len(wanted), f"expected {len(wanted)} problems, got {len(problems)}")
        for p in problems:
            expect(not ("ignored" in p or "example.com" in p or "#usage-1" in p or "first-steps" in p),
                   f"reported a link that is fine or in code: {p}")

        clean_problems = check(clean_dir, build(clean, clean_dir)).problems
        expect(clean_problems == [], f"the clean tree has problems: {clean_problems}")

    if failures:
        print("check-docs self-test FAILED:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print(f"check-docs self-test: all {len(wanted)} kinds of problem reported, a clean tree passes")
    return 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checker = check(root, argv[0])
    if checker.problems:
        print(f"docs-check: {len(checker.problems)} problem(s):", file=sys.stderr)
        for p in checker.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    c = checker.counts
    print(
        f"docs-check: {c['links']} relative links in {c['files']} Markdown files, "
        f"{c['runbook_urls']} runbook_urls and {c['flags']} flags of silo run: all resolve"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
