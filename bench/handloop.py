"""The loop a user writes by hand with the SDK, as in the README's snippet: pull, insert and
commit each event into SQLite, confirm, repeat. The benchmark's baseline; it runs until it is
stopped (SIGTERM).

    python bench/handloop.py --endpoint 127.0.0.1:8750 --database events.db
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from datetime import UTC, datetime

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717.vod_client import VodClient

# The emulator's built-in test key (public, printed by `vodpoller emulator`).
SECRET_ID = "AKIDvodpollerEmulator"  # noqa: S105
SECRET_KEY = "vodpoller-emulator-secret-key"  # noqa: S105 (public, the emulator's test key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="host:port of the emulator")
    parser.add_argument("--database", required=True, help="SQLite file")
    args = parser.parse_args()

    client = VodClient(
        credential.Credential(SECRET_ID, SECRET_KEY),
        "",
        ClientProfile(
            httpProfile=HttpProfile(endpoint=args.endpoint, protocol="http", reqTimeout=10)
        ),
    )
    database = sqlite3.connect(args.database)
    database.execute(
        "CREATE TABLE IF NOT EXISTS events ("
        " id INTEGER PRIMARY KEY, event_type TEXT, payload TEXT, received_at TEXT)"
    )
    while True:
        try:
            answer = client.call_json("PullEvents", {})
        except TencentCloudSDKException as error:
            if error.code == "ResourceNotFound":  # the long poll found nothing: ask again
                continue
            raise
        handles = []
        for entry in answer["Response"]["EventSet"]:
            database.execute(
                "INSERT INTO events (event_type, payload, received_at) VALUES (?, ?, ?)",
                (entry["EventType"], json.dumps(entry), datetime.now(UTC).isoformat()),
            )
            database.commit()
            handles.append(entry["EventHandle"])
        client.call_json("ConfirmEvents", {"EventHandles": handles})


if __name__ == "__main__":
    main()
