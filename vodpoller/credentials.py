"""Where the Tencent Cloud credentials come from, said without a secret, for `vodpoller check`.
The order is the one `config` and `source.resolve_credential` follow: the environment, the
credentials directory (systemd's LoadCredential=), the configuration file, then the SDK's chain
(profile file, CVM role, TKE OIDC)."""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tencentcloud.common import credential as sdk_credential

from vodpoller.config import CREDENTIALS_VARIABLE, read_credentials

ENV_ID = "TENCENTCLOUD_SECRET_ID"
ENV_KEY = "TENCENTCLOUD_SECRET_KEY"
ENV_TOKEN = "TENCENTCLOUD_TOKEN"  # noqa: S105 (the name of a variable, not a secret)
# The SDK reads the first of these that exists (tencentcloud.common.credential.ProfileCredential).
PROFILE_FILES = ("~/.tencentcloud/credentials", "/etc/tencentcloud/credentials")


def profile_file() -> Path | None:
    """The profile file the SDK would read, if any."""
    for name in PROFILE_FILES:
        path = Path(name).expanduser()
        if path.exists():
            return path
    return None


def _profile_has_key(path: Path) -> bool:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeError):
        return False
    if not parser.has_section("default"):
        return False
    section = parser["default"]
    return bool(section.get("secret_id", "").strip() and section.get("secret_key", "").strip())


def _secret_id_hint(credential: Any) -> str:
    """The last characters of a static SecretId, to tell keys apart; temporary ones say nothing."""
    if type(credential) is not sdk_credential.Credential:
        return ""
    secret_id = str(credential.secret_id or "")
    return f", SecretId ending {secret_id[-4:]}" if len(secret_id) >= 12 else ""


def _from_chain(credential: Any) -> str:
    if isinstance(credential, sdk_credential.CVMRoleCredential):
        return f"CVM role {credential.role}" if credential.role else "CVM role"
    if isinstance(credential, sdk_credential.OIDCRoleArnCredential):
        return "TKE OIDC role (the pod's web identity token)"
    return f"profile file {profile_file()} ([default] secret_id, secret_key)"


def origin(
    credential: Any, *, env: Mapping[str, str], config_has_key: bool, config_file: str
) -> str:
    """Where `credential` came from, and which other keys it wins over; never a secret."""
    in_env = {name: bool(env.get(name)) for name in (ENV_ID, ENV_KEY, ENV_TOKEN)}
    directory = env.get(CREDENTIALS_VARIABLE)
    profile = profile_file()
    # Each source that holds a key pair, in the order that decides (config._apply_environment,
    # then the SDK's chain): (what wins, where it is, what it is).
    holders: list[tuple[str, str, str]] = []
    if in_env[ENV_ID] and in_env[ENV_KEY]:
        names = ", ".join(name for name, present in in_env.items() if present)
        holders.append(("the environment", "", f"environment ({names})"))
    if directory and "secret_id" in read_credentials(env):
        holders.append(
            (
                "the credentials directory",
                f"{directory}/secret_id",
                f"credentials directory {directory} (secret_id, secret_key)",
            )
        )
    if config_has_key:
        holders.append(
            (
                "the configuration file",
                f"vod.secret_id in {config_file}",
                f"configuration file {config_file} (vod.secret_id, vod.secret_key)",
            )
        )
    if profile is not None and _profile_has_key(profile):
        holders.append(("the profile file", str(profile), _from_chain(credential)))
    used = holders[0][2] if holders else _from_chain(credential)
    notes = [f"{where} is not used: {holders[0][0]} wins" for _, where, _ in holders[1:]]
    if in_env[ENV_ID] != in_env[ENV_KEY]:
        present, missing = (ENV_ID, ENV_KEY) if in_env[ENV_ID] else (ENV_KEY, ENV_ID)
        notes.append(f"{present} is ignored without {missing}")
    return used + _secret_id_hint(credential) + "".join(f"; {note}" for note in notes)
