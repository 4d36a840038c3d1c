"""The fingerprint of a dead letter's failure: which dead letters failed for the same reason.

An incident dead-letters hundreds of messages from one cause, each with its own order id,
amount or sequence number in its error. Two dead letters are in one group when they share
the consumer, the subject, the exception type, the error message with its variable parts
replaced by placeholders (the *signature*, also the group's readable title), and the frame
that raised (file and function, never the line number, which moves with every edit).

Pure functions of stored values, so the recorder, a migration's backfill and a test compute
the same thing. Anything may arrive here (errors and tracebacks come from messages): input is
cut before any pattern runs, and every pattern is linear in its input.

The fingerprint is the whole SHA-256 in hex: no collision to argue about, even for a producer
that crafts its errors to land in another group.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

VERSION = "1"  # in the hash: a different normalisation gives different fingerprints
MAX_ERROR_READ = 4000  # characters of an error read: the variable tail of a long one adds no signal
MAX_SIGNATURE = 500
MAX_FRAME = 300
MAX_TRACEBACK_READ = 20_000  # the innermost Python frame is near the end, the others near the start
FINGERPRINT = re.compile(r"[0-9a-f]{64}")

# Variable parts of an error message, in the order they are replaced (quoted values first:
# whatever a quote holds is one value).
_QUOTED = re.compile(r"""(?<!\w)(?:'(?:[^'\\]|\\.){0,200}'|"(?:[^"\\]|\\.){0,200}")(?!\w)""")
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,20}://[^\s'\"<>]{1,2000}")
_EMAIL = re.compile(r"\b[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,10}")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")
_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w:])")
# 0x-prefixed, or 8+ hex digits with at least one digit and one letter (a word like "deadbeef"
# or a plain number is not an id of this kind; numbers come next).
_HEX = re.compile(r"(?<!\w)(?:0[xX][0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,})(?!\w)")
# A number standing alone or with a unit: "#1042", "3.50", "-7", "ORDERS:12", "2.5s", "200ms"; not
# part of a name ("orders.created.v1", "utf-8", "payments-2" stay as they are).
_NUMBER = re.compile(r"(?<![\w.])(?<!\w-)\d+(?:[.,]\d+)*(?:[eE][+-]?\d+)?(?=[A-Za-z]{0,3}\b)")
_SPACES = re.compile(r"\s+")
REPLACEMENTS = (
    (_QUOTED, "<str>"),
    (_URL, "<url>"),
    (_EMAIL, "<email>"),
    (_UUID, "<uuid>"),
    (_TIME, "<time>"),
    (_HEX, "<hex>"),
    (_NUMBER, "<n>"),
)

# A Python frame line; exception groups indent theirs with "|".
_PYTHON_FRAME = re.compile(r'^[ \t|+-]*File "([^"\n]{1,1000})", line \d+, in ([^\n]{1,300})$', re.MULTILINE)
# Java, JavaScript, .NET: "at pkg.Class.method(File.java:42)", "at fn (/app/x.js:10:5)"; the first is the innermost.
_AT_FRAME = re.compile(r"^[ \t]*at[ \t]+([^\n]{1,300})$", re.MULTILINE)
# Go: "goroutine 1 [running]:" then the innermost function.
_GO_FRAME = re.compile(r"^goroutine \d+ \[[^\]\n]{0,100}\]:\n([^\n(]{1,300})\(", re.MULTILINE)
_LINE_NUMBERS = re.compile(r":line \d+|:\d+(?::\d+)?|\+0x[0-9a-f]+")
_PACKAGE_ROOTS = ("site-packages/", "dist-packages/")


@dataclass(frozen=True)
class Fingerprint:
    value: str  # 64 hex characters
    signature: str  # the normalised error message: the group's title
    frame: str  # "path/to/module.py:function", or "" when no frame could be read


def fingerprint_of(*, consumer: str, subject: str, error_type: str, error: str, traceback: str) -> Fingerprint:
    """The fingerprint of one failure, from the values as stored on its dead letter."""
    signature = error_signature(error)
    frame = raising_frame(traceback)
    canonical = json.dumps([VERSION, str(consumer), str(subject), str(error_type), signature, frame])
    return Fingerprint(hashlib.sha256(canonical.encode("ascii")).hexdigest(), signature, frame)


def is_fingerprint(value) -> bool:
    return isinstance(value, str) and FINGERPRINT.fullmatch(value) is not None


def error_signature(error: str) -> str:
    """``error`` with its variable parts as placeholders (``<str>``, ``<url>``, ``<email>``,
    ``<uuid>``, ``<time>``, ``<hex>``, ``<n>``), on one line of printable characters, at most
    ``MAX_SIGNATURE`` long."""
    text = _printable(str(error)[:MAX_ERROR_READ])
    for pattern, placeholder in REPLACEMENTS:
        text = pattern.sub(placeholder, text)
    return _bounded(_SPACES.sub(" ", text).strip(), MAX_SIGNATURE)


def raising_frame(traceback: str) -> str:
    """Where the error was raised: the innermost frame of a Python traceback as
    ``path:function`` (the path from its package root, or its last three parts; no line
    number), the first ``at`` frame of a Java, JavaScript or .NET stack trace or the first
    function of a Go one (line numbers removed); "" for anything else, an empty one included."""
    text = str(traceback)
    python = None
    for python in _PYTHON_FRAME.finditer(text[-MAX_TRACEBACK_READ:]):  # noqa: B007 (the last one is the innermost)
        pass
    if python is not None:
        return _bounded(_printable(f"{_module_path(python.group(1))}:{python.group(2).strip()}"), MAX_FRAME)
    head = text[:MAX_TRACEBACK_READ]
    other = _AT_FRAME.search(head) or _GO_FRAME.search(head)
    if other is None:
        return ""
    return _bounded(_SPACES.sub(" ", _printable(_LINE_NUMBERS.sub("", other.group(1)))).strip(), MAX_FRAME)


def _module_path(path: str) -> str:
    """The same module on any machine: from its package root when installed, else its last
    three parts (``apps/orders/handlers.py`` wherever the checkout lives)."""
    path = path.replace("\\", "/")
    if path.startswith("<"):  # "<frozen importlib._bootstrap>", "<string>"
        return path
    for root in _PACKAGE_ROOTS:
        if root in path:
            return path.rsplit(root, 1)[1]
    return "/".join(path.split("/")[-3:])


def _printable(text: str) -> str:
    """Control and format characters, line breaks and lone surrogates as spaces."""
    return "".join(char if char.isprintable() else " " for char in text)


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
