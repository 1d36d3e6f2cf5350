"""What every command shares: exit codes, the one path from errors to messages, the parser."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PosixPath
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:  # imported where used: pydantic costs ~0.2 s that `healthcheck` never needs
    from pydantic import ValidationError

    from verdict.config import Settings

# 0: ok or ALLOW; 1: DENY, a failed case, an invalid store; 2: a usage or load error.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command Ctrl-C ended
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE, as shells report a command whose reader went away
# Flag names other tools use, and the flag Verdict has for the same thing: difflib alone cannot
# see that `--port` means `--listen`.
FLAG_SYNONYMS = {
    "--port": "--listen",
    "--host": "--listen",
    "--bind": "--listen",
    "--address": "--listen",
    "--addr": "--listen",
    "--policies": "--stores",
    "--policy-dir": "--stores",
    "--redis": "--redis-url",
    "--target": "--server",
}
_MAX_SHOWN_VALUE = 60
# Errors of a device that cannot take the output (full disk, quota, I/O error, file too big):
# the user's environment, not a bug, and no traceback helps them.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG})


class CommandError(Exception):
    """A command cannot do its work: ``message`` goes to stderr as ``error: ...``, the process
    exits with ``code`` (2 unless said otherwise). Commands raise it; ``run`` prints it."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Stop the command with ``message`` and exit ``code``."""
    raise CommandError(message, code)


def unusable(problems: Iterable[object], summary: str, code: int = EXIT_USAGE) -> NoReturn:
    """Stop on input that cannot be used: each problem (``file:line: ...``), then ``summary``."""
    fail("\n".join([*(str(p) for p in problems), summary]), code)


def run(args: argparse.Namespace) -> int:
    """Run the chosen command; a CommandError becomes its message and exit code, anything
    unexpected exit 2 with its traceback."""
    from verdict.cli.store_folders import check_store_folders

    try:
        check_store_folders(args)
        code: int = args.func(args)
        # Output still buffered (stdout to a file is block-buffered) fails here, where run
        # can still say so, rather than in the interpreter's last flush as a traceback.
        if sys.stdout is not None:  # None: started with stdout closed (`>&-`)
            sys.stdout.flush()
    except CommandError as exc:
        for line in exc.message.splitlines():
            print(f"error: {line}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # Ctrl-C: the command's own cleanup ran; no traceback
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `verdict ... | head`: the reader left; what ran has run
        _discard_stdout()
        return EXIT_OUTPUT_CLOSED
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            return _bug(exc)
        return _output_failed(exc)
    except Exception as exc:  # a bug: exit 1 would read as DENY or a failed case in CI
        return _bug(exc)
    return code


def _bug(exc: BaseException) -> int:
    """Exit 2 for an unexpected exception, with its traceback to report."""
    name = type(exc).__name__
    bug = f"error: internal error ({name}); this is a bug in verdict, please report it"
    print(bug, file=sys.stderr)
    traceback.print_exception(exc)  # the report's substance: kept, after the line saying what
    return EXIT_USAGE


def _output_failed(exc: OSError) -> int:
    """`verdict ... > /dev/full`: stdout cannot take what is written; exit 2."""
    _discard_stdout()
    print(f"error: cannot write the output: {exc.strerror}", file=sys.stderr)
    return EXIT_USAGE


def _discard_stdout() -> None:
    """Send later writes to stdout, and the interpreter's last flush, to /dev/null: what the
    buffer still holds would fail again, as a second traceback at exit."""
    # Stdout closed or not a file: nothing is left to flush into it.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def number_flag(
    flag: str, kind: Callable[[str], float], minimum: float, maximum: float
) -> Callable[[str], Any]:
    """An argparse type for ``flag``: a finite number of type ``kind`` (int or float) in
    [``minimum``, ``maximum``], else ``--flag=VALUE: must be ...`` (zero or a huge value
    would crash or hang the command far from the flag that caused it)."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        shown = f"{flag}={shown_value(text)}"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown}: must be {noun}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{shown}: must be {noun}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{shown}: must be at least {minimum:g}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{shown}: must be at most {maximum:g}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own "invalid" message
    return parse


def positive_int(flag: str, maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer from 1 to ``maximum``."""
    return number_flag(flag, int, 1, maximum)


def positive_float(flag: str, minimum: float, maximum: float) -> Callable[[str], float]:
    """An argparse type: a number of at least ``minimum`` (> 0) and at most ``maximum``."""
    return number_flag(flag, float, minimum, maximum)


def write_output(flag: str, given: str, text: str, example: str) -> None:
    """Write ``text`` (UTF-8) to the file ``given`` for ``flag``: parent folders made, written
    to a temporary file beside it and renamed over it, so a failed write never leaves a
    truncated file; a folder, or any OSError, stops the command naming ``flag``."""
    refuse_folder(flag, given, example)
    path = Path(given)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file where a folder of the path should be
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # nothing was made, or its folder is gone
            temporary.unlink(missing_ok=True)
        fail(f"{flag}={shown_value(given)}: cannot write ({exc.strerror or exc})")


def refuse_folder(flag: str, given: str, example: str) -> None:
    """Stop when ``given`` ends in ``/`` or names an existing folder: ``flag`` takes a file
    (``example``: a file name the message suggests inside it)."""
    if given.endswith(("/", os.sep)) or Path(given).is_dir():
        inside = f"{given.rstrip('/' + os.sep) or '.'}/{example}"
        fail(f"{flag}={shown_value(given)}: is a folder; give a file path such as {inside}")


def suggestion(word: str, choices: Iterable[str], *, quote: bool = False) -> str:
    """``; did you mean X?`` for the choice nearest ``word``, or "" when none is near."""
    options = list(choices)
    if word in FLAG_SYNONYMS and FLAG_SYNONYMS[word] in options:
        near = [FLAG_SYNONYMS[word]]
    else:
        near = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not near:
        return ""
    return f"; did you mean {near[0]!r}?" if quote else f"; did you mean {near[0]}?"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows a flag's real default, and nothing where there is none (a flag whose
    default comes from Settings says so in its own help: see ``setting_help``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, argparse.SUPPRESS, "", [])
        if shown and "default" not in text and (action.option_strings or action.nargs):
            text += " (default: %(default)s)"
        return text


def setting_help(text: str, field: str) -> str:
    """Help for a flag that sets ``field``: its VERDICT_* variable and Settings' default."""
    from verdict.config import Settings

    default = Settings.model_fields[field].default
    shown = "" if default in (None, False) else f"; default: {default}"
    return f"{text} (VERDICT_{field.upper()}{shown})"


class EmptyPath(PosixPath):
    """The path of a flag given as "" (``--stores ''``): the working folder, as Path("") is,
    but a command that needs a folder named can tell it was given none."""


def path_argument(value: str) -> Path:
    """A ``type=Path`` flag's value; an EmptyPath when it is empty."""
    return EmptyPath(value) if not value else Path(value)


class VerdictParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors come from the (sub)command at fault: its own usage line,
    and the nearest flag for an unknown one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        # `--store` must not be read as `--stores` (nor any prefix as a flag): refused, with
        # the nearest flag, like any other unknown one.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # Every `type=Path` flag: an empty value is told apart from ".", which it would be.
        self.register("type", Path, path_argument)
        self._given: list[str] | None = None

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # A subcommand or a choice that does not exist: name the nearest one.
        choices = action.choices
        if choices is not None and value not in choices:
            known = [str(c) for c in choices]
            hint = suggestion(str(value), known, quote=True)
            raise argparse.ArgumentError(
                action,
                f"invalid choice: {value!r}{hint} (choose from {', '.join(map(repr, known))})",
            )

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        # argparse hands a subcommand's unknown flags up to the top-level parser, which then
        # prints its own usage; the subcommand knows its flags, so it reports them.
        if extras:
            self.error(self._unrecognized(extras))
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        # `--principl X` leaves --principal missing: argparse would only say it is required,
        # hiding the typo that is the cause; the unknown flag and its nearest name come first.
        if message.startswith("the following arguments are required") and self._given:
            extras = self._extras_without_required(self._given)
            if extras:
                message = self._unrecognized(extras)
        # `argument --chunk: --chunk=0: ...` (number_flag's message names the flag already).
        message = re.sub(r"^argument (--[\w-]+): (?=\1=)", "", message)
        super().error(message)

    def _extras_without_required(self, given: list[str]) -> list[str]:
        """What argparse leaves unparsed of ``given`` once no flag is required."""
        required = [a for a in self._actions if a.required]
        self._given = None  # no second look from this parse's own errors
        try:
            for action in required:
                action.required = False
            return argparse.ArgumentParser.parse_known_args(self, given)[1]
        finally:
            for action in required:
                action.required = True

    def _unrecognized(self, extras: list[str]) -> str:
        flags = [o for a in self._actions for o in a.option_strings]
        unknown = next((e.split("=", 1)[0] for e in extras if e.startswith("--")), None)
        hint = suggestion(unknown, flags) if unknown else ""
        return f"unrecognized arguments: {' '.join(extras)}{hint}"


def add_commands(parser: argparse.ArgumentParser, dest: str, metavar: str) -> Any:
    """The subcommand set of ``parser`` (its children are VerdictParsers too)."""
    return parser.add_subparsers(
        dest=dest, required=True, metavar=metavar, parser_class=VerdictParser
    )


def shown_value(value: object) -> str:
    """A setting's value as an error message may show it: URLs without credentials, long
    values cut, quoted when empty or with surrounding whitespace (else invisible)."""
    whole = str(value)
    text = whole.strip()
    if "://" in text:
        text = redact_url(text)
    elif "@" in text:  # user:password@host without a scheme: the part before @ may be secret
        text = "***@" + text.rpartition("@")[2]
    if len(text) > _MAX_SHOWN_VALUE:
        text = text[: _MAX_SHOWN_VALUE - 3] + "..."
    if whole and whole == whole.strip():
        return text
    lead, trail = whole[: len(whole) - len(whole.lstrip())], whole[len(whole.rstrip()) :]
    return f"'{lead}{text}{trail}'" if whole.strip() else f"'{whole}'"


def check_redis_url(flag: str, url: str | None) -> None:
    """Stop, naming ``flag``, unless ``url`` (when given) is one redis-py opens as meant: it
    would raise a ValueError, shown as a traceback, only once the client is made, and it reads
    a database that is not a number as another one."""
    from verdict.redis_urls import redis_url_problem

    problem = None if url is None else redis_url_problem(url)
    if problem is not None:
        fail(f"{flag}={shown_value(url)}: {problem}")


def redact_url(url: str) -> str:
    """``url`` without user name, password or query (which may carry a password)."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        if not host and url.startswith(f"{parts.scheme}://"):
            # unix:///path: urlunsplit would drop the empty authority, and the form the user
            # gave with it (unix:/path).
            return f"{parts.scheme}://{parts.path}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<unparsable URL>"


def _problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as the expected form, without pydantic's wording or links."""
    kind, ctx = error["type"], error.get("ctx") or {}
    simple = {
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "int_type": "must be an integer",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "bool_parsing": "must be true or false",
        "path_type": "must be a path",
        "string_type": "must be text",
        "extra_forbidden": "is not a setting",
        "missing": "is required",
    }
    if kind in simple:
        return simple[kind]
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        bound = ctx.get(key)
        shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
        return f"must be {words} {shown}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        choices = re.fullmatch(r"\^\(([\w|]+)\)\$", pattern)
        if choices:
            return f"must be one of {', '.join(choices[1].split('|'))}"
        return f"must match {pattern}"
    message = str(error.get("msg", "is not valid"))
    return message.removeprefix("Value error, ")


def settings_problems(exc: ValidationError, flags: Mapping[str, str]) -> list[str]:
    """One line per invalid setting, named as the user gave it: the flag (``flags`` maps field
    names to the flags that set them) or else its VERDICT_* environment variable."""
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        problem = _problem(error)
        if not field:
            lines.append(problem)  # a rule across settings (TLS files, ...)
            continue
        name = flags.get(field) or f"VERDICT_{field.upper()}"
        value = error.get("input")
        shown = "" if value is None or isinstance(value, dict) else f"={shown_value(value)}"
        lines.append(f"{name}{shown}: {problem}")
    return lines


def load_settings(overrides: Mapping[str, Any], flags: Mapping[str, str]) -> Settings:
    """Settings from ``overrides`` (flags given) over VERDICT_* variables, or a CommandError
    naming each invalid one (``flags``: field name -> flag, for those that came from flags)."""
    from pydantic import ValidationError

    from verdict.config import Settings

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        named = {field: flag for field, flag in flags.items() if field in given}
        fail("\n".join(settings_problems(exc, named)))


def choose_store(stores: Iterable[str], store: str | None, flag: str = "--store") -> None:
    """Stop with a message blaming ``flag`` when ``store`` is not one of ``stores``."""
    known = sorted(stores)
    if store is not None and store not in known:
        hint = suggestion(store, known, quote=True)
        fail(f"{flag} {store!r} is not one of the policy stores {known}{hint}")
