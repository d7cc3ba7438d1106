"""`appliance-release`: keys, releases, staged rollouts. Run on an ML engineer's or release manager's
machine, never on a device. docs/ota.md has the whole walk-through."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from device.cli_main import run_main

from . import checks
from .publish import NewRelease, add_release, change, decode
from .repository import Repository


def main(argv: list[str] | None = None) -> int:
    return run_main("appliance-release", _parser().parse_args(argv), _dispatch)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance-release", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--repo", type=Path, required=True, help="the repository folder to serve over HTTP")
    parser.add_argument(
        "--keys", type=Path, required=True, help="the folder of signing keys (keep it private)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create keys and an empty repository; prints the root.json for devices")
    add = sub.add_parser("add", help="publish a model from a manifest as a new release")
    add.add_argument("--manifest", type=Path, required=True)
    add.add_argument("--model", required=True, help="the model id in the manifest")
    add.add_argument("--version", default="", help="MAJOR.MINOR.PATCH (default: the manifest entry's)")
    add.add_argument("--channel", default="beta")
    add.add_argument("--percent", type=int, default=10, help="rollout percent on that channel")
    add.add_argument("--min-firmware", default="0.0.0")
    add.add_argument("--photo", type=Path, action="append", required=True, help="a validation photo (repeat)")
    for name, text in (("promote", "add the release to another channel"), ("rollout", "change its percent")):
        cmd = sub.add_parser(name, help=text)
        _release_args(cmd)
        cmd.add_argument("--channel", required=True)
        cmd.add_argument("--percent", type=int, required=True)
    halt = sub.add_parser("halt", help="stop a rollout: devices stop taking it and roll back from it")
    _release_args(halt)
    halt.add_argument("--reason", required=True)
    rotate = sub.add_parser("rotate", help="replace a role's key (a new root version names it)")
    rotate.add_argument("role", choices=["root", "targets", "snapshot", "timestamp"])
    sub.add_parser("refresh", help="re-sign snapshot and timestamp before they expire (run daily)")
    sub.add_parser("list", help="every release, its channels and state")
    return parser


def _release_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--model", required=True)
    cmd.add_argument("--version", required=True)


def _dispatch(args: argparse.Namespace) -> int:
    repo = Repository(args.repo, args.keys)
    if args.command in ("promote", "rollout", "halt"):
        # They only look a release up, but a bad value should say so, not "no release ../x".
        checks.value("--model", args.model, checks.MODEL_ID)
        checks.value("--version", args.version, checks.VERSION)
    if args.command in ("promote", "rollout"):
        checks.value("--channel", args.channel, checks.CHANNEL)
        checks.percent(args.percent)
    if args.command == "init":
        print(f"repository created; install {repo.init()} on devices as ota.trusted_root")
    elif args.command == "add":
        new = NewRelease(
            args.manifest, args.model, args.version, args.channel, args.percent, args.photo, args.min_firmware
        )
        print(f"published {add_release(repo, new)}")
    elif args.command in ("promote", "rollout"):
        path = change(
            repo, args.model, args.version, lambda c: c["channels"].__setitem__(args.channel, args.percent)
        )
        print(f"{path}: channel {args.channel} at {args.percent}%")
    elif args.command == "halt":
        path = change(
            repo, args.model, args.version, lambda c: c.update(halted=True, halt_reason=args.reason)
        )
        print(f"{path}: halted ({args.reason})")
    elif args.command == "rotate":
        print(f"new {args.role} key; root is now version {repo.rotate(args.role)}")
    elif args.command == "refresh":
        repo.publish(repo.targets())
        print("snapshot and timestamp re-signed")
    else:
        json.dump(_listing(repo), sys.stdout, indent=2)
        print()
    return 0


def _listing(repo: Repository) -> list[dict[str, Any]]:
    return [
        {
            "target": path,
            **{
                k: v
                for k, v in decode(t.unrecognized_fields["custom"]["appliance"]).items()
                if k in ("model_id", "kind", "version", "channels", "halted", "halt_reason", "min_firmware")
            },
        }
        for path, t in repo.releases().items()
    ]
