"""python -m telemetry acl: Redis ACL users, one per role (telemetry/roles.py), for a pipeline
and a consumer group."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from telemetry.acl import acl_file_text, apply_users, role_passwords, write_private
from telemetry.cli import CommandParser, PipelineConfig, add_redis_arguments, run_main
from telemetry.connection import connect
from telemetry.errors import UsageError
from telemetry.keys import validate_name
from telemetry.roles import ROLE_NAMES, roles


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m telemetry", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    acl = commands.add_parser(
        "acl", help="print an ACL file with one user per role (producer, bridge, worker, notifier, reader, admin)",
        description="Print an ACL file (for redis.conf's aclfile, or ACL LOAD) with one user per role, each the "
                    "least its processes need on the pipeline --prefix and the group --group. Passwords are "
                    "generated and only their SHA-256 hashes go in the file.")
    acl.add_argument("--secrets", type=Path, metavar="DIR",
                     help="write each role's password to DIR/<role> (mode 0600), for --redis-password-file; "
                          "passwords already there are kept")
    acl.add_argument("--rotate", action="store_true", help="with --secrets: new passwords, even where DIR has some")
    acl.add_argument("--out", type=Path, metavar="FILE", help="write the ACL file here (mode 0600) instead of stdout")
    acl.add_argument("--user-prefix", default="", metavar="TEXT",
                     help="name the users TEXT<role> (e.g. plant7- for plant7-worker), for several pipelines or "
                          "groups on one server; their secrets are DIR/TEXT<role>")
    acl.add_argument("--role", action="append", choices=ROLE_NAMES, metavar="ROLE",
                     help="only this role (repeatable; default all)")
    acl.add_argument("--apply", action="store_true",
                     help="also set the users on the Redis of --redis-url/$REDIS_URL (every node of a cluster), "
                          "whose user must be allowed to (ACL SETUSER); ACL SAVE where the server has an aclfile")
    add_redis_arguments(acl)
    return parser


def run_acl(args, config: PipelineConfig) -> int:
    if args.rotate and args.secrets is None:
        raise UsageError("--rotate: only with --secrets DIR (where the new passwords go)")
    if args.apply and args.secrets is None:
        raise UsageError("--apply: give --secrets DIR too, or the passwords of the users it sets are lost")
    if args.apply and not (args.redis_url or os.environ.get("REDIS_URL")):
        raise UsageError("--apply: name the server whose users it sets (--redis-url or REDIS_URL); it does not "
                         "fall back to localhost or the embedded server")
    if args.user_prefix:
        validate_name("--user-prefix", args.user_prefix)
    chosen = [role for role in roles(config.keys, config.group) if not args.role or role.name in args.role]
    users = role_passwords(chosen, args.secrets, rotate=args.rotate, name_prefix=args.user_prefix)
    text = acl_file_text(users)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_private(args.out, text)
    where = f"; passwords in {args.secrets}/{args.user_prefix}<role>" if args.secrets else " (passwords not kept: give --secrets DIR)"
    print(f"acl: {len(users)} users for pipeline {config.keys.namespace_tag!r}, group {config.group!r}{where}",
          file=sys.stderr)
    if args.apply:
        db = connect(config.target())
        for applied in apply_users(db, users):
            print(f"acl: {applied.users} users set on {applied.node}"
                  + ("" if applied.saved else " (no aclfile on that server: they last until it restarts)"),
                  file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = PipelineConfig.from_args(args)
    return run_acl(args, config)


def entry() -> None:
    """The installed console script."""
    run_main(main)


if __name__ == "__main__":
    entry()
