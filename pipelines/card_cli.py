"""The command line every rendered model card shares: `python -m zoo.pipelines.<system>_card [OUTPUT.md]`."""
from __future__ import annotations

import argparse
import importlib.resources
import string
from collections.abc import Callable
from pathlib import Path


def fill_template(name: str, values: dict) -> str:
    """model_cards/<name> with its $fields filled; a field the template names but `values` lacks raises KeyError."""
    template = importlib.resources.files("zoo.model_cards").joinpath(name).read_text()
    return string.Template(template).substitute(values)


def card_main(render: Callable[[], str], prog: str, description: str, argv=None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("output", nargs="?", default=None, help="where the card goes (default: print it)")
    args = parser.parse_args(argv)
    card = render()
    if args.output:
        Path(args.output).write_text(card)
    else:
        print(card)
