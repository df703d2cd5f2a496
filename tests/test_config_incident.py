"""idwall.config.incident: ``privileged`` and ``incident`` (playbooks, notice, webhooks), read from real files.

A playbook is the response rehearsed before the breach, so every mistake in one must stop the gateway at
start-up with the file, line, key and fix: an unknown step or scope, a stage without the names its scope
needs, a step listed twice, ``raise_fresh_auth`` without a window, a webhook in clear text or with a
secret that is not a Standard Webhooks key.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from idwall.config import load_config
from idwall.config.model import IncidentConfig, IncidentNotice, Playbook, PlaybookStage, PrivilegedConfig
from tests.helpers.config_files import BASE, assert_error, config_tree, error, write

SECRET = os.urandom(32)

# BASE has 16 lines; these start at line 17.
INCIDENT = """\
privileged:
  groups: [sre, sre]
incident:
  notice: {title: Security incident, body: Sign in again with your passkey., contact: soc@example.com}
  webhooks:
    - {url: https://soar.example/hook, secret_file: certs/webhook.secret}
    - {url: http://127.0.0.1:9100/hook, secret_file: certs/webhook.secret}
  playbooks:
    org-wide-reset:
      trigger: privileged credentials exposed
      exclude: {groups: [break-glass], users: [ciso]}
      stages:
        - {scope: privileged, steps: [kill, revoke_devices, suspect_passkeys]}
        - {scope: all, steps: [kill, revoke_devices, raise_fresh_auth], fresh_auth: 5m}
    one-user:
      trigger: one user compromised
      stages:
        - {scope: target, steps: [kill, revoke_tokens, require_reapproval]}
    eng-only:
      trigger: ransomware detected on engineering laptops
      stages:
        - {scope: groups, groups: [eng], steps: [kill]}
        - {scope: users, users: [alice], steps: [block_code_enrollment]}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = config_tree(tmp_path)
    (tree / "certs" / "webhook.secret").write_text("whsec_" + base64.b64encode(SECRET).decode() + "\n")
    return tree


def test_sections_are_optional_and_empty_by_default(tree: Path) -> None:
    config = load_config(write(tree, BASE))
    assert config.privileged == PrivilegedConfig(groups=())
    assert config.incident == IncidentConfig(playbooks=(), notice=None, webhooks=())


def test_every_field_is_read(tree: Path) -> None:
    config = load_config(write(tree, BASE + INCIDENT))
    assert config.privileged.groups == ("sre",)
    assert config.incident.notice == IncidentNotice("Security incident", "Sign in again with your passkey.", "soc@example.com")
    assert [(w.url, w.secret) for w in config.incident.webhooks] == [
        ("https://soar.example/hook", SECRET), ("http://127.0.0.1:9100/hook", SECRET)]
    assert config.incident.playbook("org-wide-reset") == Playbook(
        name="org-wide-reset", trigger="privileged credentials exposed",
        stages=(PlaybookStage("privileged", ("kill", "revoke_devices", "suspect_passkeys")),
                PlaybookStage("all", ("kill", "revoke_devices", "raise_fresh_auth"), fresh_auth=300)),
        exclude_groups=("break-glass",), exclude_users=("ciso",))
    assert config.incident.playbook("one-user").stages == (
        PlaybookStage("target", ("kill", "revoke_tokens", "require_reapproval")),)
    assert config.incident.playbook("eng-only").stages == (
        PlaybookStage("groups", ("kill",), groups=("eng",)), PlaybookStage("users", ("block_code_enrollment",), users=("alice",)))
    assert config.incident.playbook("nope") is None


def test_a_secret_without_the_whsec_prefix_is_accepted(tree: Path) -> None:
    (tree / "certs" / "webhook.secret").write_text(base64.b64encode(SECRET).decode())
    assert load_config(write(tree, BASE + INCIDENT)).incident.webhooks[0].secret == SECRET


@pytest.mark.parametrize(("old", "new", "line", "key", "fragments"), [
    ("groups: [sre, sre]", "groups: sre", 18, "privileged.groups", ("expected a list, got a string",)),
    ("privileged:\n  groups: [sre, sre]\n", "privileged: [sre]\n", 17, "privileged", ("expected a mapping",)),
    ("  notice: {title", "  notes: {title", 20, "incident.notes", ("unknown key", "did you mean 'notice'?")),
    ("body: Sign in again with your passkey., ", "", 20, "incident.notice.body", ("missing required key",)),
    ("    org-wide-reset:", "    Org Wide:", 25, "incident.playbooks.Org Wide", ("is not a playbook name", "lower-case letters")),
    (INCIDENT[INCIDENT.index("  playbooks:"):], "  playbooks: [org-wide-reset]\n", 24, "incident.playbooks",
     ("expected a mapping of playbooks by name",)),
    ("      trigger: privileged credentials exposed\n", "", 25, "incident.playbooks.org-wide-reset.trigger",
     ("missing required key",)),
    ("[kill, revoke_devices, suspect_passkeys]", "[kill, revoke_device]", 29,
     "incident.playbooks.org-wide-reset.stages[0].steps[1]", ("'revoke_device' is not a step", "revoke_devices")),
    ("[kill, revoke_devices, suspect_passkeys]", "[kill, kill]", 29,
     "incident.playbooks.org-wide-reset.stages[0].steps[1]", ("kill is listed twice",)),
    ("[kill, revoke_devices, suspect_passkeys]", "[]", 29, "incident.playbooks.org-wide-reset.stages[0].steps",
     ("expected a non-empty list of steps",)),
    ("{scope: privileged, steps", "{scope: admins, steps", 29, "incident.playbooks.org-wide-reset.stages[0].scope",
     ("'admins' is not allowed", "privileged | all | groups | users | target")),
    ("{scope: privileged, steps", "{scope: privileged, groups: [eng], steps", 29,
     "incident.playbooks.org-wide-reset.stages[0].groups", ("only goes with scope: groups", "remove 'groups:'")),
    ("{scope: groups, groups: [eng], steps", "{scope: groups, steps", 38, "incident.playbooks.eng-only.stages[0].groups",
     ("scope groups needs the groups it covers",)),
    ("{scope: users, users: [alice], steps", "{scope: users, users: [], steps", 39,
     "incident.playbooks.eng-only.stages[1].users", ("scope users needs the users it covers",)),
    ("raise_fresh_auth], fresh_auth: 5m}", "raise_fresh_auth]}", 30, "incident.playbooks.org-wide-reset.stages[1].fresh_auth",
     ("raise_fresh_auth needs to know how fresh", "fresh_auth: 5m")),
    ("revoke_devices, raise_fresh_auth], fresh_auth: 5m}", "revoke_devices], fresh_auth: 5m}", 30,
     "incident.playbooks.org-wide-reset.stages[1].fresh_auth", ("only read by the step raise_fresh_auth",)),
    ("fresh_auth: 5m}", "fresh_auth: soon}", 30, "incident.playbooks.org-wide-reset.stages[1].fresh_auth",
     ("'soon' is not a duration",)),
    ("      stages:\n        - {scope: target, steps: [kill, revoke_tokens, require_reapproval]}\n", "      stages: []\n", 33,
     "incident.playbooks.one-user.stages", ("expected a non-empty list of stages",)),
    ("exclude: {groups: [break-glass], users: [ciso]}", "exclude: {group: [break-glass]}", 27,
     "incident.playbooks.org-wide-reset.exclude.group", ("unknown key", "did you mean 'groups'?")),
    ("url: https://soar.example/hook", "url: http://soar.example/hook", 22, "incident.webhooks[0].url",
     ("would send incident details unencrypted", "use https://")),
    ("url: https://soar.example/hook", "url: ftp://soar.example/hook", 22, "incident.webhooks[0].url",
     ("is not an https:// or an http:// URL",)),
    ("url: https://soar.example/hook", "url: https://user:pw@soar.example/hook", 22, "incident.webhooks[0].url",
     ("contains user:password@",)),
    ("secret_file: certs/webhook.secret}\n    - {url: http:", "secret_file: certs/none.secret}\n    - {url: http:", 22,
     "incident.webhooks[0].secret_file", ("file not found",)),
    (INCIDENT[INCIDENT.index("  webhooks:"):INCIDENT.index("  playbooks:")], "  webhooks: {url: x}\n", 21, "incident.webhooks", ("expected a list, got a mapping",)),
])
def test_errors_name_file_line_key_and_fix(tree: Path, old: str, new: str, line: int, key: str,
                                           fragments: tuple[str, ...]) -> None:
    text = BASE + INCIDENT
    assert old in text
    assert_error(error(tree, text.replace(old, new, 1)), tree, line, key, *fragments)


@pytest.mark.parametrize(("secret", "fragment"), [
    ("whsec_not base64!", "does not hold a base64 secret"),
    ("whsec_" + base64.b64encode(b"short").decode(), "the secret is 5 bytes"),
    ("whsec_" + base64.b64encode(os.urandom(65)).decode(), "the secret is 65 bytes"),
    ("", "the secret is 0 bytes"),
])
def test_an_unusable_webhook_secret_is_refused(tree: Path, secret: str, fragment: str) -> None:
    (tree / "certs" / "webhook.secret").write_text(secret)
    exc = error(tree, BASE + INCIDENT)
    assert_error(exc, tree, 22, "incident.webhooks[0].secret_file", fragment, "whsec_ followed by the base64")
    assert secret.removeprefix("whsec_") not in str(exc) or not secret  # the secret itself is never echoed
