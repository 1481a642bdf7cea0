"""How many signed API requests a second the emulator serves: `vodpoller emulator` in its own
process (as in the tests and demos), the real SDK in several threads of this one pulling and
confirming a backlog, the emulator's rate limit off. The emulator must not be the bottleneck
of the poller's benchmarks, which run at the API's ceiling of 2 x 100 requests/s.

    .venv/bin/python -m bench.emulator_throughput [--events 20000] [--threads 8]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717.vod_client import VodClient

from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.server import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY


def _client(endpoint: str) -> VodClient:
    return VodClient(
        credential.Credential(DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY),
        "",
        ClientProfile(httpProfile=HttpProfile(endpoint=endpoint, protocol="http", reqTimeout=10)),
    )


@contextlib.contextmanager
def _emulator_process() -> Iterator[str]:
    """`vodpoller emulator` on a free port; yields its endpoint."""
    command = ["emulator", "--port", "0", "--rate-limit", "0", "--long-poll-seconds", "0.2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "vodpoller", *command], stdout=subprocess.PIPE, text=True
    )
    try:
        first = process.stdout.readline() if process.stdout else ""
        match = re.search(r"http://(\S+) ", first)
        if match is None:
            raise RuntimeError(f"the emulator did not start: {first!r}")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait()


def _drain(endpoint: str, requests: list[int]) -> None:
    client = _client(endpoint)  # one per thread: the SDK client is not thread-safe
    count = 0
    while True:
        try:
            answer = client.call_json("PullEvents", {})
        except TencentCloudSDKException as error:
            if error.code == "ResourceNotFound":
                break
            raise
        count += 1
        handles = [entry["EventHandle"] for entry in answer["Response"]["EventSet"]]
        client.call_json("ConfirmEvents", {"EventHandles": handles})
        count += 1
    requests.append(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

    with _emulator_process() as endpoint:
        admin = EmulatorAdmin(f"http://{endpoint}")
        admin.generate(args.events)
        requests: list[int] = []
        threads = [
            threading.Thread(target=_drain, args=(endpoint, requests)) for _ in range(args.threads)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        stats = admin.stats()

    total = sum(requests)
    print(
        f"events={args.events} threads={args.threads} requests={total} "
        f"seconds={elapsed:.2f} requests_per_second={total / elapsed:.0f} "
        f"events_per_second={stats['Confirmed'] / elapsed:.0f} "
        f"confirmed={stats['Confirmed']} leased={stats['Leased']}"
    )


if __name__ == "__main__":
    main()
