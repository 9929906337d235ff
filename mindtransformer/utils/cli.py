"""Strict command-line parsing shared by every entry point.

Unknown or misspelled flags are errors that name the closest valid flag (argparse's prefix
abbreviations are off, so `--lr` never silently means `--lr_schedule`). Bad input raised as
UserInputError is printed as one line, `error: ...`, with exit status 2.
"""

import argparse
import sys

from mindtransformer.errors import CollectiveError, UserInputError, closest_name


class StrictParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        flags = [s for action in self._actions for s in action.option_strings]
        # Unknown flags first: argparse would otherwise report a misspelled required flag as missing.
        for token in argv:
            if token == "--":
                break
            name = token.split("=", 1)[0]
            if name.startswith("--") and name not in flags:
                self.error(f"unknown flag {name}{closest_name(name, flags)}; see --help")
        known, unknown = super().parse_known_args(argv, namespace)
        if unknown:
            self.error(f"unexpected argument {unknown[0]}; see --help")
        return known

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_main(main, argv=None) -> int:
    """Call main(argv); a UserInputError becomes one line on stderr and exit status 2, a failed
    data-parallel collective (CollectiveError) one line and exit status 1."""
    try:
        return main(argv) or 0
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CollectiveError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def boolean(text: str) -> bool:
    """argparse type for google/MindSpore-style flags: --do_lower_case=True, --full_batch=false."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true or false")
