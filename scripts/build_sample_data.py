#!/usr/bin/env python3
"""Build the bundled sample chat dataset ``sample_chat.jsonl``.

Source and license
------------------
Every sentence in the generated dataset is taken from text that ships with
CPython itself, all of it covered by the Python Software Foundation License
(PSF License Agreement, https://docs.python.org/3/license.html):

* ``pydoc_data.topics.topics`` -- the plain-text rendering of the Python
  language reference / library documentation topics used by ``help()``;
* docstrings of the functions and types in the ``builtins`` module and of the
  methods of a few builtin types;
* the module docstrings (first paragraph) of standard library modules, read
  from their source with ``ast`` (pure-Python modules are never imported) or,
  for a fixed allow-list of C modules, from ``module.__doc__``.

No third-party text is used.  The question/answer templates written in this
file are original to the project.

Output
------
``src/largeforge/resources/data/sample_chat.jsonl``: JSON Lines, UTF-8, one
object per line in the OpenAI "messages" format::

    {"messages": [{"role": "system", ...}?, {"role": "user", ...},
                  {"role": "assistant", ...}, ...]}

Mostly single-turn (user -> assistant); about 10% two-turn conversations (a
"Tell me more about ..." follow-up answered with the next sentences of the same
documentation passage); about 10% of rows carry a fixed system message.

Determinism
-----------
The script uses no randomness.  Every selection (which rows are kept, which get
a system message or a follow-up turn, and the row order) is derived from a
SHA-256 hash of that row's own stable key ("category:name"), never from set or
dict iteration order or PYTHONHASHSEED, and every collection is sorted before
use, so repeated runs produce byte-identical output.  Because each decision
depends only on the row itself, a row whose source text is the same in two
interpreters is emitted identically there too.  The text itself comes from the
running interpreter, though: patch releases whose bundled documentation changed
produce some different rows (e.g. 3.11.2 vs 3.11.7 differ in ~40 rows of the
"standard type hierarchy" and a few other topics).  The committed file was
generated with CPython 3.11.7 (``.venv/bin/python``) and should be regenerated
with the same interpreter::

    python scripts/build_sample_data.py          # (re)write the dataset
    python scripts/build_sample_data.py --check  # verify the committed file

Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import hashlib
import importlib
import importlib.util
import json
import re
import sys
import sysconfig
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO_ROOT / "src" / "largeforge"
RESOURCES_DIR = PACKAGE_DIR / "resources"
DATA_DIR = RESOURCES_DIR / "data"
OUTPUT_PATH = DATA_DIR / "sample_chat.jsonl"

# --------------------------------------------------------------------------
# Dataset shape
# --------------------------------------------------------------------------
MIN_ROWS = 300
MAX_ROWS = 400
MIN_ANSWER_WORDS = 15
MAX_ANSWER_WORDS = 80
MAX_PROMPT_WORDS = 30
MAX_SENTENCES = 3
# Every per-row decision below is a function of that row's own key only (a
# SHA-256 "coin" in [0, 1)), so a row whose source text is unchanged between
# interpreter versions is emitted identically, in the same relative order.
SYSTEM_SHARE = 0.10          # rows that get the system message (~10%)
TWO_TURN_SHARE = 0.55        # share of follow-up-capable rows made two-turn
                             # (about 70 of ~400 candidates qualify -> ~10%)

SYSTEM_PROMPT = (
    "You are a concise assistant that answers questions about Python "
    "using the official Python documentation."
)

# Share of each category's candidates that is kept (builtin-type methods are
# plentiful and repetitive, so only ~70% of them are used).
CATEGORY_KEEP_SHARE = {
    "builtin": 1.0,
    "method": 0.70,
    "module": 1.0,
    "special": 1.0,
    "topic": 1.0,
}

# Types whose methods are documented in pydoc topics as "str.x()" etc. or
# that we introspect for method docstrings.
TYPE_METHOD_QUALIFIERS = ("bytes", "dict", "float", "frozenset", "int", "list",
                          "set", "str", "tuple")
# Topics whose unqualified nested entries ("clear()") belong to a class entry.
NESTED_CLASS_TOPICS = ("typesmapping", "typesseq")

# Standard-library C modules whose __doc__ may be read by importing them
# (present on every CPython platform; importing them has no side effects).
C_MODULE_ALLOWLIST = (
    "array", "atexit", "binascii", "cmath", "errno", "faulthandler", "gc",
    "itertools", "marshal", "math", "select", "sys", "time", "unicodedata",
    "zlib",
)
# Pure-Python stdlib modules that are skipped (jokes, tooling, test suites,
# internal data, packages whose docstring is not a module summary).
MODULE_DENYLIST = frozenset({
    "antigravity", "this", "idlelib", "turtledemo", "lib2to3", "test",
    "pydoc_data", "ensurepip", "tkinter", "turtle", "msilib", "distutils",
    "keyword",
})

# --------------------------------------------------------------------------
# Text cleaning
# --------------------------------------------------------------------------
RULE_LINE_RE = re.compile(r"^[-=~*^_+#]{3,}$")
HEADING_UNDERLINE_RE = re.compile(r"^([*=\-~^])\1{2,}$")
SIGNATURE_RE = re.compile(
    r"^(?:(?:classmethod|staticmethod|class|abstractmethod|async)\s+)?"
    r"([A-Za-z_][\w.]*)\((.*)\)$"
)
FOOTNOTE_RE = re.compile(r"\s*\[\d+\]")
ROLE_RE = re.compile(r":[\w:.\-]+:`~?([^`<]*?)(?:\s*<[^`>]*>)?`")
DOUBLE_BACKTICK_RE = re.compile(r"``(.+?)``")
LINK_RE = re.compile(r"`([^`<]+?)\s*<[^`>]*>`_+")
EMPHASIS_RE = re.compile(r"(?<![\w*])\*{1,2}([^*\s](?:[^*]*?[^*\s])?)\*{1,2}(?![\w*])")
# pydoc renders ``code`` as "code"; convert to markdown backticks when the
# quote characters sit at word boundaries.
CODE_QUOTE_RE = re.compile(
    r"(?:(?<=^)|(?<=[\s(\[/—]))\"([^\"]+)\"(?=$|[\s.,;:)!?\]/—'’]|s\b)"
)
# Split after ., ! or ? (optionally followed by a closing bracket/quote) when
# the next sentence starts with a capital, a backtick or an opening bracket,
# but not after an initial such as "J." in "J. Postel".
SENTENCE_SPLIT_RE = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][)\"'’]))(?<![\s(][A-Z]\.)\s+(?=[A-Z`\"(‘“'])"
)
# Docstring tokens that are code: calls such as ``getattr(x, 'y')`` and dunders.
CALL_TOKEN_RE = re.compile(
    r"(?<![\w`.'\"])((?:[A-Za-z_][\w.]*\([^()]*\)|__\w+__)(?:\.\w+)*)(?![\w`(])"
)
# Parenthesized cross references: "(see section Boolean operations)".
SEE_PAREN_RE = re.compile(r"\s*\((?:[^()]*\b(?:see|See|section)\b[^()]*)\)")
SENTENCE_END_RE = re.compile(r"[.!?][)\"'’]?$")
ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.")
NON_PROSE_START = (
    "* ", "- ", "+ ", "|", ">>>", "...", "Note:", "Warning:", "Changed in version",
    "New in version", "Added in version", "Deprecated", "See also", "Seealso",
    "Availability", "Example", "CPython implementation detail", "Footnotes",
    "Raises", "Usage", "Copyright", "Author", "Written by", "XXX", "TODO",
    "Functions:", "Classes:", "Exceptions:", "Contents:", "Interface summary",
)
BAD_SENTENCE_MARKERS = (
    ">>>", "::", "``", "http", "ftp:", "www.", "@", "Copyright", "following",
    "below", "above", "as follows", "example", "Example", "See ", "see section",
    "XXX", "TODO", "this module's", "Note:", "Notes:", "Usage:", "|", "\t",
    " -- ", "\\", "muck",
)
BAD_SENTENCE_RE = re.compile(
    r"\b(?:see|section)\b"  # cross references ("see X", "in section Y")
    r"|:[a-z]+:"           # leftover reST role
    r"|<[^>]*>"            # leftover link target / placeholder
    r"|`[^`'\s]+'"         # old-style `quote' pairs
    r"|\w\(`"              # code split inside a nested call
)


def word_count(text: str) -> int:
    return len(text.split())


def join_lines(lines: list[str]) -> str:
    """Join wrapped lines, repairing words that were wrapped at a hyphen."""
    out = ""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if not out:
            out = line
        elif re.search(r"[A-Za-z]-$", out) and re.match(r"[A-Za-z]", line):
            out += line
        else:
            out += " " + line
    return out


def _outside_code(text: str, func) -> str:
    """Apply ``func`` to the parts of ``text`` outside `backtick` spans."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") and p.endswith("`") and len(p) > 1
                   else func(p) for p in parts)


def clean_inline(text: str, *, pydoc_quotes: bool,
                 params: frozenset = frozenset()) -> str:
    """Normalize one paragraph of documentation text to plain markdown-ish.

    * reST roles, ``literals`` and links become `code` / plain text;
    * pydoc's "code" quoting becomes `code` (``pydoc_quotes``); prose quotes
      (curly in pydoc output) become single quotes, so any straight double
      quote left over marks an ambiguous literal and the sentence is dropped;
    * *emphasis* is removed, except around parameter names and dunders,
      which become `code`;
    * in docstrings, call-like tokens (``name(args)``) and dunders become
      `code` so that both sources share one style;
    * footnote markers, URLs and "(see section ...)" cross references are
      removed; whitespace is collapsed.
    """
    text = FOOTNOTE_RE.sub("", text)
    text = re.sub(r"\s*<(?:https?|ftp)://[^>]*>", "", text)
    text = LINK_RE.sub(r"\1", text)
    text = ROLE_RE.sub(lambda m: "`" + m.group(1).strip().lstrip("~") + "`", text)
    text = DOUBLE_BACKTICK_RE.sub(r"`\1`", text)
    if pydoc_quotes:
        text = CODE_QUOTE_RE.sub(r"`\1`", text)
        text = text.replace("“", "'").replace("”", "'")
    else:
        text = text.replace("“", '"').replace("”", '"')

    def emphasis(m: re.Match) -> str:
        word = m.group(1)
        if word in params or re.fullmatch(r"__\w+__(?:\(\))?", word):
            return f"`{word}`"
        return word

    text = _outside_code(text, lambda s: EMPHASIS_RE.sub(emphasis, s))
    if not pydoc_quotes:
        text = _outside_code(text, lambda s: CALL_TOKEN_RE.sub(r"`\1`", s))
    # Identifiers with underscores are always code.
    text = _outside_code(text, lambda s: re.sub(
        r"(?<![\w`'\".])((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*_\w*(?:\.\w+)*)(?![\w`'\"])",
        r"`\1`", s))
    text = (text.replace("‘", "'").replace("’", "'").replace("…", "...")
            .replace("\u00a0", " "))
    text = SEE_PAREN_RE.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text


def split_sentences(text: str) -> list[str]:
    protected = text
    for i, abbr in enumerate(ABBREVIATIONS):
        protected = protected.replace(abbr + " ", f"\x00{i}\x00 ")
    pieces = SENTENCE_SPLIT_RE.split(protected)
    out = []
    for piece in pieces:
        for i, abbr in enumerate(ABBREVIATIONS):
            piece = piece.replace(f"\x00{i}\x00", abbr)
        piece = piece.strip()
        if piece:
            out.append(piece)
    return out


def sentence_ok(sentence: str, *, pydoc_quotes: bool) -> bool:
    if not SENTENCE_END_RE.search(sentence):
        return False
    if any(marker in sentence for marker in BAD_SENTENCE_MARKERS):
        return False
    if BAD_SENTENCE_RE.search(sentence):
        return False
    if sentence.count("`") % 2:
        return False
    if pydoc_quotes and '"' in sentence:
        return False
    if sentence.count("(") != sentence.count(")"):
        return False
    # Every `code` span must sit at word boundaries; otherwise the markup was
    # applied inside a larger expression (e.g. "bytes[:-`len(prefix)`]").
    for m in re.finditer(r"`[^`]*`", sentence):
        before = sentence[m.start() - 1] if m.start() else " "
        after = sentence[m.end()] if m.end() < len(sentence) else " "
        if before not in " ([{'\"/" or after not in " .,;:)]}'\"?/s-":
            return False
    prose = re.sub(r"`[^`]*`", "", sentence)
    if any(mark in prose for mark in ("*", "!", "...", " - ")):
        return False
    if word_count(sentence) < 3:
        return False
    return True


def paragraphs(lines: list[str]) -> list[list[str]]:
    paras: list[list[str]] = []
    cur: list[str] = []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            paras.append(cur)
            cur = []
    if cur:
        paras.append(cur)
    return paras


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def prose_run(lines: list[str]) -> list[str]:
    """Return the leading run of plain prose paragraphs of a block.

    A paragraph is prose when every line sits at the block's base indentation
    and it does not look like code, a table, a list or an admonition.  The run
    stops at the first paragraph that is not prose; grammar productions
    (``::=``) are skipped, and leading "Source code:" lines and rules
    (``=====``) are ignored.
    """
    paras = paragraphs(lines)
    out: list[str] = []
    base = None
    for para in paras:
        first = para[0].strip()
        if not out and (first.startswith("Source code:")
                        or all(RULE_LINE_RE.match(l.strip()) for l in para)):
            continue
        if any("::=" in line for line in para):
            if out:
                continue
            break
        if base is None:
            base = indent_of(para[0])
        if any(indent_of(line) != base for line in para):
            break
        if first.startswith(NON_PROSE_START) or re.match(r"^\d+\.\s", first):
            break
        if any(RULE_LINE_RE.match(line.strip())
               or line.strip().startswith(("+--", "|", ">>>")) for line in para):
            break
        out.append(join_lines(para))
    return out


def take_sentences(sentences: list[str], start: int, prefix: str,
                   *, pydoc_quotes: bool) -> tuple[str, int]:
    """Accumulate up to MAX_SENTENCES clean sentences starting at ``start``.

    Stops (never skips) at the first unusable sentence so that the answer is
    always a contiguous passage.  A leading sentence that introduces a code
    block ("...into a program:") is turned into a plain statement.
    Returns (answer_body, next_index).
    """
    taken: list[str] = []
    i = start
    while i < len(sentences) and len(taken) < MAX_SENTENCES:
        s = sentences[i]
        if s.endswith(":") and not taken and i == start == 0:
            s = s[:-1].rstrip() + "."
        if not sentence_ok(s, pydoc_quotes=pydoc_quotes):
            break
        candidate = " ".join(taken + [s])
        if word_count(prefix) + word_count(candidate) > MAX_ANSWER_WORDS:
            break
        taken.append(s)
        i += 1
    return " ".join(taken), i


def make_answers(prose: list[str], prefix: str, *, pydoc_quotes: bool,
                 params: frozenset = frozenset()):
    """Return (first_answer, follow_up_answer_or_None) or None.

    A first paragraph without final punctuation (a title line such as
    "Calendar printing functions") becomes a sentence; a later one ends the
    passage.
    """
    cleaned: list[str] = []
    for idx, para in enumerate(prose):
        para = clean_inline(para, pydoc_quotes=pydoc_quotes, params=params)
        if not para:
            break
        if not re.search(r"[.!?:][)\"']?$", para):
            if idx:
                break
            para += "."
        cleaned.append(para)
    # Split per paragraph so that a paragraph ending in ":" (which introduced
    # a skipped grammar block) stays a sentence of its own.
    sentences = [sent for para in cleaned for sent in split_sentences(para)]
    if not sentences:
        return None
    body, nxt = take_sentences(sentences, 0, prefix, pydoc_quotes=pydoc_quotes)
    if not body:
        return None
    body = body[0].upper() + body[1:] if not body.startswith("`") else body
    answer = f"{prefix} {body}".strip() if prefix else body
    if not MIN_ANSWER_WORDS <= word_count(answer) <= MAX_ANSWER_WORDS:
        return None
    follow, _ = take_sentences(sentences, nxt, "", pydoc_quotes=pydoc_quotes)
    if follow and not follow.startswith("`"):
        follow = follow[0].upper() + follow[1:]
    if not follow or not MIN_ANSWER_WORDS <= word_count(follow) <= MAX_ANSWER_WORDS:
        follow = None
    return answer, follow


# --------------------------------------------------------------------------
# Candidate items
# --------------------------------------------------------------------------
class Item:
    """One question/answer candidate (plus an optional follow-up turn)."""

    __slots__ = ("category", "name", "prompt", "prefix", "answer",
                 "follow_prompt", "follow_answer")

    def __init__(self, category, name, prompt, prefix, answers, follow_prompt):
        self.category = category
        self.name = name
        self.prompt = prompt
        self.prefix = prefix
        self.answer, self.follow_answer = answers
        self.follow_prompt = follow_prompt

    @property
    def key(self) -> str:
        return f"{self.category}:{self.name}"


def stable_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def coin(purpose: str, key: str) -> float:
    """Deterministic pseudo-random number in [0, 1) for one row decision."""
    return int(stable_hash(purpose, key)[:8], 16) / 2**32


def split_sections(text: str) -> list[tuple[str, list[str]]]:
    """Split a pydoc topic into (heading, body lines) sections."""
    lines = text.split("\n")
    sections: list[tuple[str, list[str]]] = []
    title = None
    body: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (line.strip() and not line.startswith(" ")
                and HEADING_UNDERLINE_RE.match(nxt.strip())
                and abs(len(nxt.strip()) - len(line.strip())) <= 2):
            if title is not None:
                sections.append((title, body))
            title, body = line.strip(), []
            i += 2
            continue
        body.append(line)
        i += 1
    if title is not None:
        sections.append((title, body))
    return sections


def find_entries(lines: list[str]):
    """Yield (names, body lines, context, first signature) for entries.

    An entry is one or more signature lines at indent N, a blank line, and a
    body indented at N + 3.  ``context`` is the name of the innermost
    enclosing ``class X(...)`` entry, if any.
    """
    class_stack: list[tuple[int, str]] = []
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        ind = indent_of(line)
        while class_stack and ind <= class_stack[-1][0]:
            class_stack.pop()
        j = i
        sigs = []
        while j < n and lines[j].strip() and indent_of(lines[j]) == ind:
            m = SIGNATURE_RE.match(lines[j].strip())
            if not m:
                break
            sigs.append((lines[j].strip(), m.group(1)))
            j += 1
        if (sigs and j + 1 < n and not lines[j].strip()
                and lines[j + 1].strip() and indent_of(lines[j + 1]) == ind + 3):
            k = j + 1
            body = []
            while k < n and (not lines[k].strip() or indent_of(lines[k]) >= ind + 3):
                body.append(lines[k])
                k += 1
            context = class_stack[-1][1] if class_stack else None
            yield [name for _, name in sigs], body, context, sigs[0][0]
            if sigs[0][0].startswith("class "):
                class_stack.append((ind, sigs[0][1]))
            i = j + 1
            continue
        i += 1


TITLE_KEEP_CASE = frozenset({
    "Boolean", "CPython", "Ellipsis", "None", "NotImplemented", "Python",
    "Unicode",
})
SKIP_TITLES = frozenset({"overview", "footnotes"})


def title_to_subject(title: str) -> tuple[str, str | None]:
    """Turn a topic heading into (subject phrase, statement keyword)."""
    title = title.replace("…", "...")
    m = re.fullmatch(r'The "(\w+)" statement', title)
    if m:
        return f"the `{m.group(1)}` statement", m.group(1)
    subject = re.sub(r'"([^"]+)"', r"`\1`", title)
    subject = re.sub(r"\*(__\w+__)\*", r"`\1`", subject)
    subject = re.sub(r"(?<![\w`])(__\w+__)(?![\w`])", r"`\1`", subject)
    subject = re.sub(r"\s+—\s+(.*)$", r" (\1)", subject)
    words = []
    for word in subject.split(" "):
        if word not in TITLE_KEEP_CASE and re.fullmatch(r"[A-Z][a-z]+(?:-[a-z]+)?", word):
            word = word.lower()
        words.append(word)
    subject = " ".join(words)
    if re.match(r"^`[^`]+` (?:clause|statement|object|objects|type|types)\b", subject):
        subject = "the " + subject
    return subject, None


def topic_items(topics: dict) -> list[Item]:
    items: list[Item] = []
    seen_titles: set[str] = set()
    for topic in sorted(topics):
        for title, body in split_sections(topics[topic]):
            norm = title.lower()
            if norm in seen_titles or norm in SKIP_TITLES:
                continue
            seen_titles.add(norm)
            prose = prose_run(body)
            if not prose:
                continue
            subject, keyword = title_to_subject(title)
            if keyword:
                prompt = f"Explain the `{keyword}` statement in Python."
                prefix = f"`{keyword}` is a Python statement."
                follow_prompt = f"Tell me more about the `{keyword}` statement."
            else:
                prompt = f"Explain {subject} in Python."
                prefix = f"From the Python docs on {subject}:"
                follow_prompt = f"Tell me more about {subject}."
            res = make_answers(prose, prefix, pydoc_quotes=True)
            if res is None:
                continue
            items.append(Item("topic", title, prompt, prefix, res, follow_prompt))
    return items


def entry_items(topics: dict) -> list[Item]:
    items: list[Item] = []
    seen: set[str] = set()
    for topic in sorted(topics):
        for names, body, context, sig in find_entries(topics[topic].split("\n")):
            name = names[0]
            if "." not in name:
                if (topic in NESTED_CLASS_TOPICS and context in TYPE_METHOD_QUALIFIERS
                        and not hasattr(builtins, name)):
                    name = f"{context}.{name}"
                else:
                    continue
            qual, _, attr = name.rpartition(".")
            if qual == "object" and attr.startswith("__") and attr.endswith("__"):
                category = "special"
                prompt = f"What is the `{attr}` special method in Python?"
                prefix = f"`object.{attr}` is a special method."
                follow_prompt = f"Tell me more about `{attr}`."
            elif qual in TYPE_METHOD_QUALIFIERS and not attr.startswith("_"):
                category = "method"
                prompt = f"What does the `{name}` method do in Python?"
                prefix = f"`{name}` is a method of the builtin `{qual}` type."
                follow_prompt = f"Tell me more about `{name}`."
            else:
                continue
            if name in seen:
                continue
            prose = prose_run(body)
            if not prose:
                continue
            params = frozenset(re.findall(r"[A-Za-z_]\w*", SIGNATURE_RE.match(
                sig.split(None, 1)[-1] if sig.startswith(("class ", "classmethod ", "staticmethod ")) else sig
            ).group(2))) - {"self", "cls", "None", "True", "False"}
            res = make_answers(prose, prefix, pydoc_quotes=True, params=params)
            if res is None:
                continue
            seen.add(name)
            items.append(Item(category, name, prompt, prefix, res, follow_prompt))
    return items


def docstring_prose(doc: str, *, skip_signatures: str | None = None) -> list[str]:
    lines = doc.expandtabs().split("\n")
    # Dedent (like inspect.cleandoc) without importing inspect's rules.
    rest = [l for l in lines[1:] if l.strip()]
    margin = min((indent_of(l) for l in rest), default=0)
    lines = [lines[0].strip()] + [l[margin:] for l in lines[1:]]
    while lines and not lines[0].strip():
        lines.pop(0)
    if skip_signatures:
        # Drop leading "name(args) -> result" signature lines.
        while lines and ("->" in lines[0] or re.match(
                rf"^(?:async\s+)?{re.escape(skip_signatures)}\(.*\)\s*$", lines[0].strip())
                or (lines[0].startswith(" ") and lines[0].strip())):
            lines.pop(0)
        while lines and not lines[0].strip():
            lines.pop(0)
    return prose_run(lines)


def builtin_items() -> list[Item]:
    items: list[Item] = []
    for name in sorted(vars(builtins)):
        if name.startswith("_"):
            continue
        obj = getattr(builtins, name)
        if isinstance(obj, type):
            if issubclass(obj, BaseException):
                continue
            kind = "type"
        elif type(obj).__name__ == "builtin_function_or_method":
            kind = "function"
        else:
            continue
        doc = obj.__doc__ or ""
        prose = docstring_prose(doc, skip_signatures=name)
        if not prose:
            continue
        if kind == "type":
            prompt = f"What is the Python `{name}` type?"
            prefix = f"`{name}` is a builtin type."
        else:
            prompt = f"What does the Python `{name}` builtin do?"
            prefix = f"`{name}` is a builtin function."
        res = make_answers(prose, prefix, pydoc_quotes=False)
        if res is None:
            continue
        items.append(Item("builtin", name, prompt, prefix, res,
                          f"Tell me more about `{name}`."))
    return items


def introspected_method_items(existing: set[str]) -> list[Item]:
    items: list[Item] = []
    for qual in TYPE_METHOD_QUALIFIERS:
        tp = getattr(builtins, qual)
        for attr in sorted(vars(tp)):
            if attr.startswith("_"):
                continue
            name = f"{qual}.{attr}"
            if name in existing:
                continue
            obj = vars(tp)[attr]
            doc = getattr(obj, "__doc__", None)
            if not callable(obj) and not isinstance(obj, (classmethod, staticmethod)):
                continue
            if not isinstance(doc, str):
                continue
            prose = docstring_prose(doc, skip_signatures=attr)
            if not prose:
                continue
            prefix = f"`{name}` is a method of the builtin `{qual}` type."
            res = make_answers(prose, prefix, pydoc_quotes=False)
            if res is None:
                continue
            items.append(Item("method", name,
                              f"What does the `{name}` method do in Python?",
                              prefix, res, f"Tell me more about `{name}`."))
    return items


def _stdlib_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    return sorted({Path(paths[key]).resolve() for key in ("stdlib", "platstdlib")})


def _is_within(path: str, root: Path) -> bool:
    resolved = Path(path).resolve()
    if "site-packages" in resolved.parts or "dist-packages" in resolved.parts:
        return False
    return resolved == root or root in resolved.parents


def module_doc(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    origin = spec.origin or ""
    if origin.endswith(".py"):
        # Only text that ships with CPython: never a same-named third-party
        # module that happens to be importable (e.g. from site-packages).
        if not any(_is_within(origin, root) for root in _stdlib_roots()):
            return None
        try:
            source = Path(origin).read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            return None
        return ast.get_docstring(tree, clean=True)
    if name in C_MODULE_ALLOWLIST:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(name)
            except ImportError:
                return None
        doc = module.__doc__
        return doc if isinstance(doc, str) else None
    return None


def module_items() -> list[Item]:
    items: list[Item] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in MODULE_DENYLIST:
            continue
        doc = module_doc(name)
        if not doc:
            continue
        lines = doc.split("\n")
        # Strip a leading "name -- summary" / "name: summary" / "name.py - ..."
        lines[0] = re.sub(
            rf"^\s*(?:module\s+)?{re.escape(name)}(?:\.py)?\s*(?:--?|—|:)\s*", "",
            lines[0], flags=re.IGNORECASE)
        prose = docstring_prose("\n".join(lines))
        if not prose:
            continue
        prefix = f"`{name}` is a standard library module."
        res = make_answers(prose, prefix, pydoc_quotes=False)
        if res is None:
            continue
        items.append(Item("module", name, f"Summarize the `{name}` module.", prefix,
                          res, f"Tell me more about the `{name}` module."))
    return items


# --------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------
def collect_items() -> list[Item]:
    from pydoc_data.topics import topics

    items = topic_items(topics)
    entries = entry_items(topics)
    items += entries
    items += builtin_items()
    items += introspected_method_items({i.name for i in entries})
    items += module_items()

    # Exact de-duplication of prompts and of answer bodies.
    out: list[Item] = []
    seen_prompts: set[str] = set()
    seen_bodies: set[str] = set()
    for item in sorted(items, key=lambda it: (it.category, it.name)):
        # Compare answers without their templated prefix.
        body = item.answer[len(item.prefix):].strip()
        if item.prompt in seen_prompts or body in seen_bodies:
            continue
        seen_prompts.add(item.prompt)
        seen_bodies.add(body)
        out.append(item)
    return out


def select_items(items: list[Item]) -> list[Item]:
    return [it for it in items
            if coin("keep", it.key) < CATEGORY_KEEP_SHARE.get(it.category, 0.0)]


def build_rows(items: list[Item]) -> list[dict]:
    rows = []
    for item in sorted(items, key=lambda it: stable_hash("order", it.key)):
        messages = []
        if coin("system", item.key) < SYSTEM_SHARE:
            messages.append({"role": "system", "content": SYSTEM_PROMPT})
        messages.append({"role": "user", "content": item.prompt})
        messages.append({"role": "assistant", "content": item.answer})
        if item.follow_answer and coin("two-turn", item.key) < TWO_TURN_SHARE:
            messages.append({"role": "user", "content": item.follow_prompt})
            messages.append({"role": "assistant", "content": item.follow_answer})
        rows.append({"messages": messages})
    return rows


def validate(rows: list[dict]) -> None:
    if not MIN_ROWS <= len(rows) <= MAX_ROWS:
        raise SystemExit(f"row count {len(rows)} outside [{MIN_ROWS}, {MAX_ROWS}]")
    seen = set()
    for idx, row in enumerate(rows):
        msgs = row["messages"]
        roles = [m["role"] for m in msgs]
        if roles and roles[0] == "system":
            roles = roles[1:]
        if not roles or roles[-1] != "assistant" or any(
                r != ("user" if k % 2 == 0 else "assistant") for k, r in enumerate(roles)):
            raise SystemExit(f"row {idx}: bad role sequence {roles}")
        for m in msgs:
            content = m["content"]
            if not content or content != content.strip():
                raise SystemExit(f"row {idx}: empty/unstripped content")
            wc = word_count(content)
            if m["role"] == "assistant" and not MIN_ANSWER_WORDS <= wc <= MAX_ANSWER_WORDS:
                raise SystemExit(f"row {idx}: assistant answer has {wc} words")
            if m["role"] == "user" and wc >= MAX_PROMPT_WORDS:
                raise SystemExit(f"row {idx}: user prompt has {wc} words")
        line = json.dumps(row, ensure_ascii=False)
        if line in seen:
            raise SystemExit(f"row {idx}: duplicate row")
        seen.add(line)


def render(rows: list[dict]) -> str:
    # Key order is the (deterministic) insertion order: "messages", then
    # "role" before "content" in every message, as in the OpenAI format.
    return "".join(json.dumps(row, ensure_ascii=False, separators=(", ", ": ")) + "\n"
                   for row in rows)


def ensure_package_files() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for init in (RESOURCES_DIR / "__init__.py", DATA_DIR / "__init__.py"):
        if not init.exists():
            init.write_text("", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH,
                        help=f"output path (default: {OUTPUT_PATH})")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the output file differs")
    args = parser.parse_args(argv)

    if sys.version_info[:2] != (3, 11):
        print(f"warning: the committed dataset was built with CPython 3.11; "
              f"running {sys.version.split()[0]} may change its content",
              file=sys.stderr)

    rows = build_rows(select_items(collect_items()))
    validate(rows)
    text = render(rows)

    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date ({len(rows)} rows)")
        return 0

    if args.output == OUTPUT_PATH:
        ensure_package_files()
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {len(rows)} rows to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
