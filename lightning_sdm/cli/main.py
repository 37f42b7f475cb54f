"""`lightning-sdm`: train, tokenize, generate, export, plot, inspect patterns.

Training commands (fit, validate, test, predict) go through LightningCLI; the others are
built by jsonargparse from the typed functions in `lightning_sdm.cli.commands`. All take
`--config x.yaml`, print theirs with `--print_config` and name options alike
(`--codec.pretrained`, `--sampling.top_k`); the short forms of earlier versions
(`--codec-dir`, `--min-seconds`, `--top-k`, repeated `--prompt`, bare `--latents`) still work.
"""

from __future__ import annotations

import errno
import inspect
import signal
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import ActionConfigFile, Namespace

from lightning_sdm.atomic import destination_of
from lightning_sdm.cli import commands
from lightning_sdm.cli.parsing import CommandParser

TRAINING_COMMANDS = ("fit", "validate", "test", "predict")
# Command path -> (function, required parameters become positionals).
COMMANDS: dict[str, tuple[Callable[..., int], bool]] = {
    "tokenize": (commands.tokenize, True),
    "generate": (commands.generate, False),
    "import-musicgen": (commands.import_musicgen, True),
    "export": (commands.export, False),
    "evaluate": (commands.evaluate, True),
    "plot": (commands.plot, True),
    "demo": (commands.demo, False),
    "serve": (commands.serve, False),
    "listening-report": (commands.listening_report, True),
    "patterns show": (commands.patterns_show, False),
    "patterns table": (commands.patterns_table, False),
}
# Earlier spellings that do not follow from the parameter names.
ALIASES: dict[str, dict[str, str]] = {
    "tokenize": {"--codec-dir": "--codec.pretrained", "--no-progress": "--progress=false"},
    "generate": {
        "--no-progress": "--progress=false",
        "--temperature": "--sampling.temperature",
        "--top-k": "--sampling.top_k",
        "--top-p": "--sampling.top_p",
        "--cfg": "--cfg_scale",
    },
    "patterns show": {"--no-matrix": "--matrix=false"},
}


def _command_parser(path: str) -> CommandParser:
    function, positional = COMMANDS[path]
    parser = CommandParser(prog=f"lightning-sdm {path}", description=_description(function))
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML of these options")
    parser.add_function_arguments(function, as_positional=positional)
    return parser


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="lightning-sdm",
        description=__doc__,
        epilog="Training: lightning-sdm fit|validate|test|predict --config CONFIG.yaml "
        "(LightningCLI; see `lightning-sdm fit --help`).",
    )
    top = parser.add_subcommands(dest="command")
    groups: dict[str, Any] = {}
    for path in COMMANDS:
        group, _, leaf = path.partition(" ")
        if not leaf:
            top.add_subcommand(group, _command_parser(path), help=_summary(path))
            continue
        if group not in groups:
            group_parser = CommandParser(prog=f"lightning-sdm {group}")
            leaves = ", ".join(o.partition(" ")[2] for o in COMMANDS if o.startswith(f"{group} "))
            top.add_subcommand(group, group_parser, help=f"{group} commands: {leaves}")
            groups[group] = group_parser.add_subcommands(dest="command")
        groups[group].add_subcommand(leaf, _command_parser(path), help=_summary(path))
    return parser


def _description(function: Callable[..., int]) -> str:
    """The docstring without its Args section (that goes to each option's help)."""
    return inspect.cleandoc(function.__doc__ or "").split("\nArgs:")[0].strip()


def _summary(path: str) -> str:
    """The description's first sentence: up to the first full stop that ends one outside
    parentheses ("(e.g. a copy of …)" and "(RUN/demo_report.json)" do not end it)."""
    text = _description(COMMANDS[path][0])
    depth = 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "." and depth == 0 and text[index + 1 : index + 2] in ("", " ", "\n"):
            return text[:index]
    return text


def _alternatives(hint: object) -> set[object]:
    """The origins a hint allows: list[str] | None -> {list, NoneType}."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return {typing.get_origin(arg) or arg for arg in typing.get_args(hint)}
    return {typing.get_origin(hint) or hint}


def _parameter_kinds(function: Callable[..., int]) -> tuple[set[str], set[str]]:
    """(bool parameters, list parameters) of a command, by option name."""
    hints = typing.get_type_hints(function)
    flags = {f"--{n}" for n, t in hints.items() if t is bool}
    lists = {f"--{n}" for n, t in hints.items() if list in _alternatives(t)}
    return flags, lists


def normalise(words: list[str]) -> list[str]:
    """Earlier spellings to the typed ones: `--min-seconds 2` -> `--min_seconds 2`, a bare
    `--latents` -> `--latents=true`, repeated `--prompt a --prompt b` and `--compare a b`
    -> a list."""
    depth = 2 if words[:1] == ["patterns"] else 1
    path = " ".join(words[:depth])
    if path not in COMMANDS:
        return words
    flags, lists = _parameter_kinds(COMMANDS[path][0])
    aliases = ALIASES.get(path, {})
    result = words[:depth]
    rest = words[depth:]
    list_option = None  # the list option whose values are being read: `--compare a b`
    for index, word in enumerate(rest):
        if not word.startswith("--") or word == "--":
            if list_option is not None and result[-1] != f"{list_option}+":
                result.append(f"{list_option}+")  # a further value of the same list
            result.append(word)
            continue
        list_option = None
        name, equals, value = word.partition("=")
        name = aliases.get(name, name)
        if "=" in name:  # an alias that carries its value
            result.append(name)
            continue
        if name not in aliases.values() and "." not in name:
            name = "--" + name[2:].replace("-", "_")
        following = rest[index + 1] if index + 1 < len(rest) else None
        if name in flags and not equals and (following is None or following.startswith("--")):
            result.append(f"{name}=true")
        elif name in lists and not equals:
            list_option = name
            result.append(f"{name}+")
        else:
            result.append(name + equals + value)
    return result


def _run(config: Namespace, parser: CommandParser) -> int:
    path = [config.command]
    node = config[config.command]
    while "command" in node and f"{' '.join(path)} {node.command}" in COMMANDS:
        path.append(node.command)
        node = node[node.command]
    function = COMMANDS[" ".join(path)][0]
    arguments = parser.instantiate(config)
    for name in path:
        arguments = arguments[name]
    values = {k: v for k, v in vars(arguments).items() if k not in ("config", "__path__")}
    return function(**values)


def main(argv: Sequence[str] | None = None) -> int:
    from lightning_sdm.allocator import keep_freed_memory
    from lightning_sdm.errors import user_error_within
    from lightning_sdm.quiet import quiet_dependencies

    quiet_dependencies()
    keep_freed_memory()  # each training or sampling step reuses the last one's pages
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in TRAINING_COMMANDS:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from lightning_sdm.cli.fit import run_training_cli
        from lightning_sdm.tasks.stability import NonFiniteLossError

        try:
            run_training_cli(None if argv is None else words)  # None: LightningCLI reads argv
        except ValueError as error:
            user_error = user_error_within(error)
            if user_error is None:
                raise
            print(f"error: {user_error}", file=sys.stderr)
            return 2
        except NonFiniteLossError as error:
            print(f"error: {error}", file=sys.stderr)  # its checkpoint is saved; no traceback
            return 1
        except SIGTERMException:
            return _stopped_status()
        except OSError as error:
            return _os_error(error)
        return 0
    if not words:
        names = "|".join([*TRAINING_COMMANDS, *dict.fromkeys(p.split()[0] for p in COMMANDS)])
        print(f"error: a command is needed: {names}\nall options: lightning-sdm --help",
              file=sys.stderr)  # fmt: skip
        return 2
    parser = build_parser()
    config = parser.parse_args(normalise(words))
    try:
        return _run(config, parser)
    except SystemExit as stop:  # the demo's fits stop on SIGTERM or Ctrl+C as `fit` does
        if "lightning.pytorch" not in sys.modules:  # no fit ran: another exit
            raise
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(stop, SIGTERMException):
            raise
        return _stopped_status()
    except (ValueError, FileNotFoundError) as error:
        user_error = user_error_within(error)
        if user_error is None and isinstance(error, FileNotFoundError) and error.filename:
            return _os_error(error)  # the system's, naming a path: said as the others are
        print(f"error: {user_error or error}", file=sys.stderr)
        return 2
    except OSError as error:
        return _os_error(error)


def _stopped_status() -> int:
    """A fit stopped at a step boundary and saved: the shell's code for the signal that
    stopped it (130 for Ctrl+C, 143 for SIGTERM), so job scripts see the stop."""
    from lightning_sdm.callbacks import preemption

    return 128 + (signal.SIGINT if preemption.stop_cause == preemption.CTRL_C else signal.SIGTERM)


# What the file system refuses because of where the user pointed a command: said in one
# line with the path. Any other OSError is a bug to see in full.
PATH_ERRORS = {
    errno.EEXIST: "a file is where a folder is needed",
    errno.ENOTDIR: "a file is where a folder is needed",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or folder, or none can be made there",
    # outputs are built beside their place under a name ~30 characters longer
    errno.ENAMETOOLONG: "a name too long for this file system (keep it under ~220 characters)",
}


def _os_error(error: OSError) -> int:
    """A full disk or a path the file system refuses, in one line. Writers here publish by
    rename, so what was written before stays whole and a rerun continues."""
    filename = destination_of(error.filename) if error.filename else None
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {filename}" if filename else ""
        print(
            f"error: the disk is full{where} ({error.strerror}); what was written "
            "before is whole: free space and run the command again to continue",
            file=sys.stderr,
        )
        return 1
    if error.errno in PATH_ERRORS and filename:
        print(f"error: {filename}: {PATH_ERRORS[error.errno]}", file=sys.stderr)
        return 2
    raise error


if __name__ == "__main__":
    sys.exit(main())
