"""idwall.cli.parser: every verb and its flags in one parser. Each verb runs its command, flags have their
documented defaults, required flags and one-of groups are enforced before any command runs (a usage error,
exit 2, naming the flag), and a root fingerprint that starts with '-' can still be passed as ``--root=FP``.

Tested by parsing real command lines with :func:`build_parser`; what each command then does is in
test_cli_local.py and test_cli_client.py.
"""

from __future__ import annotations

import argparse

import pytest

from idwall.cli.client import cmd_device_enroll, cmd_kill
from idwall.cli.local import cmd_audit_export, cmd_audit_verify, cmd_init, cmd_keys_rotate, cmd_serve
from idwall.cli.parser import DEFAULT_DEVICE_OUT, build_parser

KILL = ["--reason", "r", "--gateway", "https://gw", "--token-file", "t"]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Parse ``argv``, which must be refused as a usage error (exit 2); return what argparse printed."""
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("argv", "command"), [
    (["init", "--dir", "d"], cmd_init),
    (["serve"], cmd_serve),
    (["keys", "rotate"], cmd_keys_rotate),
    (["audit", "verify"], cmd_audit_verify),
    (["audit", "export"], cmd_audit_export),
    (["device", "enroll", "--gateway", "https://gw", "--code", "c"], cmd_device_enroll),
    (["kill", "--all", *KILL], cmd_kill),
])
def test_each_verb_runs_its_command(argv: list[str], command: object) -> None:
    assert parse(*argv).func is command


def test_documented_defaults() -> None:
    init = parse("init", "--dir", "d")
    assert (init.admin, init.port, init.host, init.force, init.json) == ("admin", 8443, "127.0.0.1", False, False)
    serve = parse("serve")
    assert (serve.config, serve.workers) == (None, 1)
    enroll = parse("device", "enroll", "--gateway", "https://gw", "--code", "c")
    assert (enroll.out, enroll.name, enroll.ca, enroll.timeout) == (str(DEFAULT_DEVICE_OUT), None, None, 600)
    assert str(DEFAULT_DEVICE_OUT) == "idwall-device"
    assert parse("audit", "export").after == 0
    verify = parse("audit", "verify")
    assert (verify.config, verify.export, verify.root, verify.ledger_key, verify.head, verify.json) == (
        None, None, None, None, None, False)
    kill = parse("kill", "--user", "alice", *KILL)
    assert (kill.user, kill.all, kill.revoke_devices, kill.yes, kill.json, kill.ca) == (
        "alice", False, False, False, False, None)


def test_numbers_are_parsed_as_numbers() -> None:
    assert parse("init", "--dir", "d", "--port", "9443").port == 9443
    assert parse("serve", "--workers", "4").workers == 4
    assert parse("audit", "export", "--after", "17").after == 17
    assert parse("device", "enroll", "--gateway", "g", "--code", "c", "--timeout", "2.5").timeout == 2.5


@pytest.mark.parametrize(("argv", "named"), [
    ([], "COMMAND"),
    (["keys"], "ACTION"),
    (["audit"], "ACTION"),
    (["device"], "ACTION"),
    (["init"], "--dir"),
    (["device", "enroll", "--code", "c"], "--gateway"),
    (["device", "enroll", "--gateway", "https://gw"], "--code --user"),
    (["kill", "--reason", "r", "--gateway", "g", "--token-file", "t"], "--user --device --session --group --all"),
    (["kill", "--user", "a", "--gateway", "g", "--token-file", "t"], "--reason"),
    (["kill", "--user", "a", "--reason", "r", "--token-file", "t"], "--gateway"),
    (["kill", "--user", "a", "--reason", "r", "--gateway", "g"], "--token-file"),
])
def test_a_missing_required_flag_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                            named: str) -> None:
    assert named in usage_error(capsys, *argv)


@pytest.mark.parametrize(("argv", "named"), [
    (["kill", "--user", "a", "--all", *KILL], "not allowed with argument --user"),
    (["kill", "--user", "a", "--device", "d", *KILL], "not allowed with argument --user"),
    (["audit", "verify", "--config", "c", "--export", "e"], "not allowed with argument --config"),
    (["device", "enroll", "--gateway", "g", "--code", "c", "--user", "bob"], "not allowed with argument --code"),
])
def test_one_of_groups_take_exactly_one(capsys: pytest.CaptureFixture[str], argv: list[str], named: str) -> None:
    assert named in usage_error(capsys, *argv)


@pytest.mark.parametrize("argv", [
    ["init", "--dir", "d", "--port", "abc"],
    ["serve", "--workers", "many"],
    ["audit", "export", "--after", "1.5"],
    ["device", "enroll", "--gateway", "g", "--code", "c", "--timeout", "soon"],
    ["serve", "--wokers", "2"],
    ["keys", "rotate", "--all"],
    ["frobnicate"],
])
def test_bad_values_and_unknown_words_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert "usage: idwall" in usage_error(capsys, *argv)


def test_a_root_fingerprint_starting_with_a_dash_goes_with_equals(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse("audit", "verify", "--root=-x9Qw_abc").root == "-x9Qw_abc"
    # as a separate word argparse takes it for an option, which is why the help says to write --root=FP
    assert "--root" in usage_error(capsys, "audit", "verify", "--root", "-x9Qw_abc")


def test_help_lists_every_verb_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse("--help")
    assert info.value.code == 0
    shown = capsys.readouterr().out
    for verb in ("init", "serve", "keys", "audit", "device", "kill", "demo"):
        assert f"    {verb} " in shown, verb
