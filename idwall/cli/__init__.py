"""The ``idwall`` command line (DESIGN.md "Command line").

    idwall init --dir D [--admin USER] [--json] [--force] [--port 8443] [--host 127.0.0.1]
    idwall serve [--config FILE] [--workers N]
    idwall keys rotate [--config FILE]
    idwall audit verify [--config FILE | --export FILE] [--root=FINGERPRINT] [--json]
    idwall audit export [--config FILE] [--after SEQ]
    idwall device enroll --gateway URL --code CODE [--out DIR] [--name NAME] [--ca FILE] [--timeout 600]
    idwall kill (--user U | --device D | --session S | --group G | --all) --reason TEXT [--revoke-devices]
                --gateway URL --token-file F [--ca FILE] [--json] [--yes]
    idwall connect ROUTE --gateway URL [--listen 127.0.0.1:PORT] [--dir DIR] [--ca FILE] [--timeout 600]
    idwall relay --listen HOST:PORT --upstream tcp://host:port --jwks URL --audience NAME [--allow-from CIDR]...
                 [--issuer URL] [--htu tcp://host:port] [--ca FILE]
    idwall invite create --user U --name N --email E [--group G]... [--admin] [--manager M]  \
    idwall device approve DEVICE_ID                                                       | --gateway URL
    idwall admin grant|revoke USER                                                        | [--dir D | --cert F --key F]
    idwall token create --name N --scope kill|read|incident... --ttl 1h                   / [--ca FILE] [--json]
    idwall demo ...

Exit codes: 0 success, 1 the operation failed (gateway refused, ledger did not
verify, unexpected error), 2 the command line or the configuration is wrong.
No command ever prints a traceback unless ``IDWALL_DEBUG=1``.

Text that comes from a gateway (problem details, URLs) is printed with control
characters removed, so a hostile or broken server cannot drive the terminal.

``parser`` holds every verb and its flags, ``local`` the commands on a gateway directory, ``client`` the
commands that talk HTTPS to a gateway, ``output`` the one-line errors, text cleaning and exit codes.
"""

from __future__ import annotations

import sys

from .local import cmd_demo
from .output import guarded
from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``idwall`` command; returns the exit code (0 ok, 1 failed, 2 usage or config)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        return guarded(lambda: cmd_demo(argv[1:]))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    return guarded(lambda: args.func(args))
