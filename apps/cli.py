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


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only; "
                   "0.0.0.0 serves every network interface with no login, and `zoo demo` warns)")


@command("demo", "launch the Gradio gallery of the zoo's systems (serves until Ctrl-C)", _demo_arguments)
def _demo(args: argparse.Namespace) -> None:
    from .gallery import launch

    launch(port=args.port, host=args.host)


@command("routing-table", "print which expert each word goes to in one top-2 and one XMoE layer (no weights)")
def _routing_table(args: argparse.Namespace) -> None:
    from .routing_demo import main as routing_demo

    routing_demo()


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("system", help="system name, e.g. mofme (see zoo.pipelines.train.RECIPE_MODULES)")
    p.add_argument("--recipe", default="tiny", help="recipe name (default: tiny)")
    p.add_argument("--output-dir", default=None, help="where checkpoints and results go (default: under the user cache)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's number of steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe-specific setting, repeatable (e.g. --set ship=true)")


@command("train", "train a system with a named recipe (zoo train mofme --recipe tiny)", _train_arguments)
def _train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from zoo.pipelines.train import TrainOptions, get_recipe, parse_extra

    run = get_recipe(args.system, args.recipe)
    print_result(run(TrainOptions(output_dir=Path(args.output_dir) if args.output_dir else None, resume=args.resume,
                     max_steps=args.max_steps, seed=args.seed, extra=parse_extra(args.settings))))


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("system", help="system name, e.g. mofme")
    p.add_argument("--weights", default=None, help="folder with trained weights (default: the shipped ones)")


@command("eval", "print a system's held-out figures (zoo eval mofme)", _eval_arguments)
def _eval(args: argparse.Namespace) -> None:
    from zoo.pipelines.train import get_evaluation

    evaluate = get_evaluation(args.system)
    if args.weights is not None:
        check_weight_files(args.weights)
    print_result(evaluate(args.weights))


def check_weight_files(folder: str) -> None:
    """Every safetensors file under --weights whole and well-formed, so a truncated or damaged one is named
    here rather than failing inside the loader with a message that names no file."""
    from pathlib import Path

    from zoo.integrations.checkpoint_files import safetensors_shapes

    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"--weights {path} does not exist")
    for file in sorted(path.rglob("*.safetensors")) if path.is_dir() else [path]:
        safetensors_shapes(file)


def print_result(result: object) -> None:
    """Recipes and evaluations return their figures as a dict: show them, whatever they printed."""
    if isinstance(result, dict):
        import json

        print(json.dumps(result, indent=2, default=str))


@command("list", "list the zoo's systems (registered model classes) and presets (upcycling plans, model sizes)")
def _list(args: argparse.Namespace) -> None:
    from zoo.pipelines.catalog import describe_plan, presets, systems

    print("systems:")
    for row in systems():
        print(f"  {row['system']:<12} {', '.join(row['model_types']) or '-':<22} {', '.join(row['classes']) or '-'}")
        if row["summary"]:
            print(f"  {'':<12} {row['summary']}")
    print("\nupcycling plans (zoo upcycle --plan NAME):")
    found = presets()
    for name in found.pop("upcycle"):
        print(f"  {name:<24} {describe_plan(name)}")
    for system, names in found.items():
        print(f"\n{system} presets:\n  " + ", ".join(names))


def _upcycle_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="dense checkpoint: a save_pretrained folder (e.g. the SmolLM2 cache of zoo.integrations.assets)")
    p.add_argument("--plan", required=True, help="upcycling plan name (see `zoo list`)")
    p.add_argument("--out", required=True, help="folder for the upcycled model (AutoModelForCausalLM after `import zoo`)")
    p.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")


@command("upcycle", "turn a dense decoder checkpoint into an MoE with a named plan", _upcycle_arguments)
def _upcycle(args: argparse.Namespace) -> None:
    from zoo.pipelines.upcycle_checkpoint import upcycle_checkpoint

    report = upcycle_checkpoint(args.base, args.plan, args.out, dtype=args.dtype)
    print(f"upcycled {report['architecture']}: {report['moe_layers']} MoE layers x {report['num_experts']} experts, "
          f"{report['parameters']:,} parameters, upcycling took {report['upcycle_seconds']} s -> {report['out']}")


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="an upcycled checkpoint folder (from `zoo upcycle` or save_pretrained)")
    p.add_argument("--out", required=True, help="Hub-ready folder to write")
    p.add_argument("--native", action="store_true", help="write a native Mixtral/Qwen3-MoE checkpoint (no remote code)")
    p.add_argument("--base-model", default=None, help="Hub id of the dense base, for the model card")
    p.add_argument("--license", default="apache-2.0", help="license for the model card (default: apache-2.0)")


@command("export", "write an upcycled model as a Hub folder with a model card (remote code or --native)", _export_arguments)
def _export(args: argparse.Namespace) -> None:
    from zoo.pipelines.upcycle_checkpoint import export_checkpoint

    out = export_checkpoint(args.source, args.out, native=args.native, base_model=args.base_model, license=args.license)
    print(f"exported to {out}" + (" (native transformers format)" if args.native else " (loads with trust_remote_code=True)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="moe-zoo: multimodal Mixture-of-Experts models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def _input_errors() -> tuple[type[BaseException], ...]:
    """What a bad input raises: a named ValueError (config fields, shapes, damaged checkpoints, json errors), an
    OSError (missing or unreadable files; transformers' own file errors) or a SafetensorError from a weights file
    the pre-checks did not cover. Anything else is a bug and keeps its traceback."""
    from safetensors import SafetensorError

    return ValueError, OSError, SafetensorError


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (transformers' messages span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except _input_errors() as error:
        print(f"zoo {args.command}: {one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
