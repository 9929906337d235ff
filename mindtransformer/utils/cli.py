"""Strict command-line parsing shared by every entry point.

Unknown or misspelled flags are errors that name the closest valid flag (argparse's prefix
abbreviations are off, so `--lr` never silently means `--lr_schedule`). Bad input raised as
UserInputError is printed as one line, `error: ...`, with exit status 2.
"""

import argparse
import sys

from mindtransformer.errors import UserInputError, closest_name


class StrictParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        known, unknown = super().parse_known_args(args, namespace)
        if unknown:
            flags = [s for action in self._actions for s in action.option_strings]
            bad = unknown[0].split("=", 1)[0]
            self.error(f"unknown flag {bad}{closest_name(bad, flags)}; see --help")
        return known

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_main(main, argv=None) -> int:
    """Call main(argv); a UserInputError becomes one line on stderr and exit status 2."""
    try:
        return main(argv) or 0
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
