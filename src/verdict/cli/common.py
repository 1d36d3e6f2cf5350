"""What every command shares: exit codes, the one path from errors to messages, the parser."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
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
    except CommandError as exc:
        for line in exc.message.splitlines():
            print(f"error: {line}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # Ctrl-C: the command's own cleanup ran; no traceback
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `verdict ... | head`: the reader left; what ran has run
        # Later writes (the interpreter's last flush) go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OUTPUT_CLOSED
    except Exception as exc:  # a bug: exit 1 would read as DENY or a failed case in CI
        name = type(exc).__name__
        bug = f"error: internal error ({name}); this is a bug in verdict, please report it"
        print(bug, file=sys.stderr)
        traceback.print_exc()  # the report's substance: kept, after the line saying what it is
        return EXIT_USAGE
    return code


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
