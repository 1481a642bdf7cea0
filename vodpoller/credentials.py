"""Where the Tencent Cloud credentials come from, said without a secret, for `vodpoller check`.
The order is the one `config` and `source.resolve_credential` follow: the environment, the
configuration file, then the SDK's chain (profile file, CVM role, TKE OIDC)."""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tencentcloud.common import credential as sdk_credential

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
    env_pair = in_env[ENV_ID] and in_env[ENV_KEY]
    profile = profile_file()
    profile_has_key = profile is not None and _profile_has_key(profile)
    notes: list[str] = []
    if env_pair:
        names = ", ".join(name for name, present in in_env.items() if present)
        used = f"environment ({names})"
        if config_has_key:
            notes.append(f"vod.secret_id in {config_file} is not used: the environment wins")
        if profile_has_key:
            notes.append(f"{profile} is not used: the environment wins")
    elif config_has_key:
        used = f"configuration file {config_file} (vod.secret_id, vod.secret_key)"
        if profile_has_key:
            notes.append(f"{profile} is not used: the configuration file wins")
    else:
        used = _from_chain(credential)
    if in_env[ENV_ID] != in_env[ENV_KEY]:
        present, missing = (ENV_ID, ENV_KEY) if in_env[ENV_ID] else (ENV_KEY, ENV_ID)
        notes.append(f"{present} is ignored without {missing}")
    return used + _secret_id_hint(credential) + "".join(f"; {note}" for note in notes)
