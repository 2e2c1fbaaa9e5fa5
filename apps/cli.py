"""The `zoo` command. Subcommands register themselves in COMMANDS (name -> (help, add_arguments, run))."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    def register(run):
        COMMANDS[name] = (help, add_arguments, run)
        return run
    return register


@command("demo", "launch the demo (the routing table until the gallery exists)")
def _demo(args: argparse.Namespace) -> None:
    from .routing_demo import main as routing_demo

    routing_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="moe-zoo: multimodal Mixture-of-Experts models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError) as error:
        print(f"zoo {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
