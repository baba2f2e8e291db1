#!/usr/bin/env python3
"""Writes a man page (section 1) for a CLI11 program from its --help text.

The page has NAME and SYNOPSIS from the program's own help, OPTIONS from its option list, and one
subsection per subcommand (nested ones included, found by asking each subcommand for its --help),
with that subcommand's usage, arguments, options and footer (examples). A file of hand-written roff
sections (ENVIRONMENT, FILES, EXIT STATUS, SEE ALSO, ...) is appended as it is, except that its DESCRIPTION
section, if it has one, replaces the one-line description after SYNOPSIS.

    man.py --program BUILD/bin/splitfs --name splitfs --version 0.1.0 \
           --sections cmake/man/splitfs.roff --output splitfs.1

Fails (exit status 1) if a --help cannot be run or does not look like CLI11's, so a broken page is
never installed.
"""

import argparse
import os
import re
import subprocess
import sys

HELP_TIMEOUT_SECONDS = 30
MAX_DEPTH = 4  # subcommand nesting followed at most


class HelpError(Exception):
    pass


def run_help(program, path):
    env = dict(os.environ)
    # An instrumented build must not fail the page over a leak report at exit.
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    try:
        done = subprocess.run([program, *path, "--help"], capture_output=True, text=True,
                              timeout=HELP_TIMEOUT_SECONDS, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HelpError(f"cannot run {program} {' '.join(path)} --help: {e}") from e
    if done.returncode != 0:
        raise HelpError(f"{program} {' '.join(path)} --help exited with {done.returncode}: "
                        f"{done.stderr.strip()}")
    return done.stdout


class Help:
    """One --help text, split the way CLI11 lays it out:

        description
        Usage: PROGRAM [OPTIONS] ...

        Section:
          NAME                        description
          LONG NAME THAT DOES NOT FIT
                                      description

        footer
    """

    def __init__(self, text):
        self.description = []
        self.usage = ""
        self.sections = []  # (title, [(name, description)])
        self.footer = []
        lines = text.rstrip("\n").split("\n")
        i = 0
        while i < len(lines) and not lines[i].startswith("Usage:"):
            if lines[i].strip():
                self.description.append(lines[i].strip())
            i += 1
        if i == len(lines):
            raise HelpError("no 'Usage:' line in the help text")
        self.usage = lines[i][len("Usage:"):].strip()
        i += 1
        while i < len(lines):
            line = lines[i]
            next_indented = i + 1 < len(lines) and lines[i + 1].startswith("  ")
            if line and not line.startswith(" ") and line.endswith(":") and next_indented:
                entries = []
                i += 1
                while i < len(lines) and lines[i].startswith("  "):
                    self._entry(entries, lines[i])
                    i += 1
                self.sections.append((line[:-1], entries))
                continue
            if line.strip() or self.footer:
                self.footer.append(line.rstrip())
            i += 1
        while self.footer and not self.footer[-1]:
            self.footer.pop()

    @staticmethod
    def _entry(entries, line):
        body = line[2:]
        if body.startswith(" "):  # the description of a name too long for its column
            if not entries:
                raise HelpError(f"unexpected continuation line: {line!r}")
            name, text = entries[-1]
            entries[-1] = (name, (text + " " + body.strip()).strip())
            return
        parts = re.split(r"\s{2,}", body.strip(), maxsplit=1)
        entries.append((parts[0], parts[1] if len(parts) > 1 else ""))

    def subcommands(self):
        for title, entries in self.sections:
            if title == "Subcommands":
                return [name for name, _ in entries]
        return []


def text(value):
    """Roff-escapes running text."""
    value = value.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in value.split("\n"))


def bold(value):
    return "\\fB" + text(value) + "\\fR"


def render_entries(out, entries, skip_help):
    for name, description in entries:
        if skip_help and name == "-h,--help":
            continue
        out.append(".TP")
        out.append(bold(name))
        out.append(text(description) if description else "\\&")


def render_block(out, lines):
    out.append(".PP")
    out.append(".RS")
    out.append(".nf")
    out.extend(text(line) if line else "" for line in lines)
    out.append(".fi")
    out.append(".RE")


def collect(program, path, depth):
    """[(path, Help)] for the program (path []) and every subcommand below it, in help order."""
    helps = [(path, Help(run_help(program, path)))]
    if depth < MAX_DEPTH:
        for sub in helps[0][1].subcommands():
            helps.extend(collect(program, [*path, sub], depth + 1))
    return helps


def page(name, version, helps, sections):
    top = helps[0][1]
    summary = " ".join(top.description)
    prefix = name + ":"
    if summary.startswith(prefix):
        summary = summary[len(prefix):].strip()
    out = [
        f'.\\" Made by cmake/man.py from `{name} --help`; edit the help text, not this file.',
        f'.TH {name.upper()} 1 "" "splitfs {version}" "splitfs manual"',
        ".SH NAME",
        f"{text(name)} \\- {text(summary)}",
        ".SH SYNOPSIS",
        ".nf",
        text(top.usage),
    ]
    for path, help_ in helps[1:]:
        if not help_.subcommands():
            out.append(text(help_.usage))
    out.append(".fi")
    description, rest = split_sections(sections)
    out.append(description.rstrip("\n") if description else ".SH DESCRIPTION\n" + text(summary))
    for title, entries in top.sections:
        if title == "Subcommands":
            continue
        out.append(".SH " + text(title.upper()))
        render_entries(out, entries, skip_help=False)
    if top.footer:
        render_block(out, top.footer)
    if len(helps) > 1:
        out.append(".SH COMMANDS")
    for path, help_ in helps[1:]:
        out.append(f'.SS "{text(" ".join([name, *path]))}"')
        out.append(text(" ".join(help_.description)))
        render_block(out, ["Usage: " + help_.usage])
        for title, entries in help_.sections:
            shown = [e for e in entries if e[0] != "-h,--help"]
            if not shown:
                continue
            out.append(".PP")
            out.append(text(title) + ":")
            render_entries(out, shown, skip_help=True)
        if help_.footer:
            render_block(out, help_.footer)
    if rest:
        out.append(rest.rstrip("\n"))
    return "\n".join(out) + "\n"


def split_sections(roff):
    """The hand-written DESCRIPTION section (placed after SYNOPSIS) and all the others."""
    description, rest = [], []
    target = rest
    for line in roff.splitlines(keepends=True):
        if line.startswith(".SH "):
            target = description if line.split(None, 1)[1].strip('" \n') == "DESCRIPTION" else rest
        target.append(line)
    return "".join(description), "".join(rest)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--program", required=True, help="the executable to ask for --help")
    parser.add_argument("--name", required=True, help="the program's name on the page")
    parser.add_argument("--version", required=True)
    parser.add_argument("--sections", help="hand-written roff sections to append")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    try:
        helps = collect(args.program, [], 0)
        sections = ""
        if args.sections and os.path.exists(args.sections):
            with open(args.sections, encoding="utf-8") as f:
                sections = f.read()
        result = page(args.name, args.version, helps, sections)
    except HelpError as e:
        print(f"man.py: {args.name}: {e}", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
