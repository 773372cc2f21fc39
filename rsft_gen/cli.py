"""The `rsft-gen` command.

rsft-gen run recipes/addition_tiny.yaml rounds=2 generate.n=4
rsft-gen eval runs/addition_tiny --round 2
rsft-gen report runs/addition_tiny
rsft-gen rewards
rsft-gen config [RECIPE] [key=value ...]   # every key: type, value (or default), help
"""

from __future__ import annotations

import argparse
import logging
import sys


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_run(args) -> int:
    from rsft_gen.config import load_recipe
    from rsft_gen.loop import run

    recipe = load_recipe(args.recipe, args.overrides)
    run(recipe, allow_changes=args.allow_recipe_change)
    return 0


def cmd_eval(args) -> int:
    import json

    from rsft_gen.evaluate import evaluate_checkpoint

    metrics, _, where = evaluate_checkpoint(args.target, args.round, args.overrides)
    print(f"round {where['round']} ({where['model']}):", file=sys.stderr)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from rsft_gen.report import print_report

    print_report(Path(args.run_dir))
    return 0


def cmd_rewards(args) -> int:
    from rsft_gen.rewards import available

    found, broken = available()
    for f in found:
        print(f"{f.name:16s} {f.description}\n{'':16s} {f.source}: {f.target}")
    for name, err in broken.items():
        print(f"{name:16s} FAILED TO LOAD ({err})")
    return 0


def cmd_config(args) -> int:
    from rsft_gen.config import load_recipe
    from rsft_gen.config_help import format_keys

    recipe_path = args.recipe
    if recipe_path is not None and "=" in recipe_path:  # only overrides: `rsft-gen config rounds=2`
        args.overrides, recipe_path = [recipe_path, *args.overrides], None
    print(format_keys(load_recipe(recipe_path, args.overrides)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rsft-gen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run or resume a recipe")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rounds=2 generate.n=4")
    p.add_argument(
        "--allow-recipe-change", action="store_true", help="resume even though results-relevant keys changed"
    )
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("eval", help="evaluate a round's checkpoint (or the starting model) of a run or recipe")
    p.add_argument("target", metavar="RECIPE_OR_RUN_DIR")
    p.add_argument(
        "--round", type=int, default=None, help="round to evaluate (0 = starting model; default: the latest trained)"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. eval.n=16 'eval.k=[1,4,16]'")
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("report", help="write report.md and report.png for a run and print its table")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("rewards", help="list every reward that can be found")
    p.set_defaults(fn=cmd_rewards)
    p = sub.add_parser("config", help="print every recipe key with its type, value (or default) and help")
    p.add_argument("recipe", nargs="?", default=None, metavar="RECIPE")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rounds=2")
    p.set_defaults(fn=cmd_config)
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # key=value after an option: `rsft-gen eval RUN_DIR --round 2 eval.n=16`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging()
    from rsft_gen.config import RecipeError
    from rsft_gen.loop import EmptyRoundError
    from rsft_gen.rewards import RewardError

    try:
        return args.fn(args)
    except (RecipeError, RewardError, EmptyRoundError) as e:
        print(f"rsft-gen: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine, not the code: a missing or unreadable file, a full disk, a lost mount
        logging.getLogger("rsft_gen").debug("OSError", exc_info=True)
        where = f": '{e.filename}'" if e.filename else ""
        print(
            f"rsft-gen: error: {e.strerror or e}{where} ({type(e).__name__}); fix that path and run the same command "
            f"again (a run resumes where it stopped).",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
