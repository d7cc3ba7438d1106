"""What every command-line entry point of this repository does around its dispatch: logging, and turning
errors into one line and an exit code. A traceback appears only with --debug: operators read these
messages, not stack traces."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from device.errors import EX_SOFTWARE, ApplianceError


def run_main(prog: str, args: argparse.Namespace, dispatch: Callable[[argparse.Namespace], int]) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return dispatch(args)
    except ApplianceError as exc:
        if args.debug:
            logging.getLogger(prog).exception("failed")
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: say so, keep the trace for --debug
        if args.debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr)
        return EX_SOFTWARE
