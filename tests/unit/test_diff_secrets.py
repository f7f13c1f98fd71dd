"""`--diff` never reads a secret file's content back from the host (issue 20, item 8).

pyinfra itself, `@local --dry --diff -vvv`, on files of this machine: -vvv prints every fact's
raw output, so whatever the state read (facts/managed.py's script, built from the role by
operations/managed.py's `script_args`) brings back from the host is in what pyinfra prints. A
non-secret file's old content comes back (its diff needs it); a secret file's comes back only
as salted hashes of its lines, enough to name the keys that change and nothing more.
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYINFRA = REPO / ".venv" / "bin" / "pyinfra"

OLD_SECRET = "TunnelSecret: c2VjcmV0LW9sZC10dW5uZWwtdmFsdWUtOTk5\nAccountTag: acct-old-7f3a\n"
NEW_SECRET = "TunnelSecret: c2VjcmV0LW5ldy10dW5uZWwtdmFsdWUtMTEx\nAccountTag: acct-old-7f3a\n"
OLD_PLAIN = "metrics: 127.0.0.1:2200\nloglevel: info-plain-marker\n"
NEW_PLAIN = "metrics: 127.0.0.1:2200\nloglevel: debug\n"

DEPLOY = """
from operations import managed
from operations.managed import ManagedFile, DesiredState

owner = dict(user={user!r}, group={group!r})
desired = DesiredState(
    name="diff secrets test",
    files=[
        ManagedFile({secret!r}, {new_secret!r}.encode(), mode="0600", secret=True,
                    line_keys=(("TunnelSecret", 0, 1), ("AccountTag", 1, 2)), **owner),
        ManagedFile({plain!r}, {new_plain!r}.encode(), mode="0644", **owner),
    ],
)
managed.files(name="Connector files", desired=desired)
"""


def test_a_secret_files_content_never_comes_back_a_plain_ones_does(tmp_path: Path) -> None:
    secret, plain = tmp_path / "credentials.json", tmp_path / "config.yaml"
    secret.write_text(OLD_SECRET)
    secret.chmod(0o600)
    plain.write_text(OLD_PLAIN)
    deploy = tmp_path / "deploy.py"
    deploy.write_text(
        DEPLOY.format(
            user=pwd.getpwuid(os.getuid()).pw_name,
            group=grp.getgrgid(os.getgid()).gr_name,
            secret=str(secret),
            new_secret=NEW_SECRET,
            plain=str(plain),
            new_plain=NEW_PLAIN,
        )
    )
    done = subprocess.run(
        [str(PYINFRA), "-vvv", "--dry", "--diff", "@local", str(deploy)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYINFRA_PROGRESS": "off"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output

    # the plain file: read back (its content, base64 in the fact's output) and diffed
    assert base64.b64encode(OLD_PLAIN.encode()).decode() in output
    assert "- loglevel: info-plain-marker" in output and "+ loglevel: debug" in output
    # the secret file: named, the changed key named, no byte of either version shown
    assert f"{secret}: secret content changes (not shown); keys: TunnelSecret changes" in output
    for text in (OLD_SECRET, NEW_SECRET):
        for line in text.splitlines():
            value = line.split(": ", 1)[1]
            assert value not in output
        assert base64.b64encode(text.encode()).decode() not in output
    assert secret.read_text() == OLD_SECRET and plain.read_text() == OLD_PLAIN  # a dry run
