"""How many signed API requests a second the emulator serves, and at what CPU cost:
`vodpoller emulator` in its own process (as in the tests and demos), the real SDK in worker
processes of several threads each pulling and confirming a backlog. The emulator must not be
the bottleneck of the poller's benchmarks, which run at the API's ceiling of 100 PullEvents
and 100 ConfirmEvents a second, 16 events per pull, with network latency added.

Two kinds of run, each printed as one line (`--json PATH` writes them all):
- `flat out`: no latency, no pacing: the most the emulator serves, and its CPU per request;
- `ceiling`: `--latency-ms` added to every answer (`vodpoller emulator --latency-ms`), the
  clients paced at 100 pulls + 100 confirms a second, with enough threads that latency holds
  ~30 connections open at once: the rate reached, the time each request took beyond the
  added latency (p50/p99), and the share of a core the emulator used.

The clients are the real SDK (`sdk`), or signed requests over `http.client` (`raw`), which
cost a tenth of the SDK's CPU, so that on a small machine the emulator, not its clients, is
what is measured. Flat out runs with both, the ceiling with `--ceiling-client` (raw).

    .venv/bin/python -m bench.emulator_throughput [--events 20000] [--processes 2]
        [--threads 8] [--latency-ms 30 150] [--seconds 10] [--ceiling-client raw|sdk]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717.vod_client import VodClient

from vodpoller.emulator import signature
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.api import API_VERSION
from vodpoller.emulator.server import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY

CEILING_PER_ACTION = 100  # requests per second per action, the real API's limit
EVENTS_PER_PULL = 16


class _ResourceNotFoundError(Exception):
    pass


class _SdkClient:
    def __init__(self, endpoint: str):
        self._client = VodClient(
            credential.Credential(DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY),
            "",
            ClientProfile(
                httpProfile=HttpProfile(endpoint=endpoint, protocol="http", reqTimeout=10)
            ),
        )

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = self._client.call_json(action, params)["Response"]
        except TencentCloudSDKException as error:
            if error.code == "ResourceNotFound":
                raise _ResourceNotFoundError from None
            raise
        return answer


class _RawClient:
    """TC3-signed `POST /` over one keep-alive `http.client` connection."""

    def __init__(self, endpoint: str):
        host, _, port = endpoint.rpartition(":")
        self._endpoint = endpoint
        self._connection = http.client.HTTPConnection(host, int(port), timeout=10)

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params).encode()
        timestamp = int(time.time())
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        headers = {
            "Content-Type": "application/json",
            "Host": self._endpoint,
            "X-TC-Action": action,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": API_VERSION,
        }
        request = signature.SignedRequest(
            "POST", "/", "", {k.lower(): v for k, v in headers.items()}, body
        )
        canonical = signature.canonical_request(
            request, ["content-type", "host"], lower_values=False
        )
        mac = signature.signature(DEFAULT_SECRET_KEY, date, str(timestamp), canonical)
        headers["Authorization"] = (
            f"{signature.ALGORITHM} Credential={DEFAULT_SECRET_ID}/{date}/vod/tc3_request, "
            f"SignedHeaders=content-type;host, Signature={mac}"
        )
        self._connection.request("POST", "/", body, headers)
        answer: dict[str, Any] = json.loads(self._connection.getresponse().read())["Response"]
        if "Error" in answer:
            if answer["Error"]["Code"] == "ResourceNotFound":
                raise _ResourceNotFoundError
            raise RuntimeError(answer["Error"])
        return answer


_CLIENTS: dict[str, type[_SdkClient] | type[_RawClient]] = {"sdk": _SdkClient, "raw": _RawClient}


@dataclass(frozen=True)
class Emulator:
    endpoint: str
    pid: int


@contextlib.contextmanager
def _emulator_process(latency_ms: float) -> Iterator[Emulator]:
    """`vodpoller emulator` on a free port, its rate limit off."""
    command = [
        "emulator",
        "--port",
        "0",
        "--rate-limit",
        "0",
        "--long-poll-seconds",
        "0.2",
        "--latency-ms",
        f"{latency_ms:g}",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "vodpoller", *command], stdout=subprocess.PIPE, text=True
    )
    try:
        first = process.stdout.readline() if process.stdout else ""
        match = re.search(r"http://(\S+) ", first)
        if match is None:
            raise RuntimeError(f"the emulator did not start: {first!r}")
        yield Emulator(match.group(1), process.pid)
    finally:
        process.terminate()
        process.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Pacer:
    """Hands out send times `1/rate` apart to the threads of one process; rate 0: no pacing."""

    def __init__(self, rate: float):
        self._interval = 1 / rate if rate else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = self._next = max(self._next + self._interval, now)
        if slot > now:
            time.sleep(slot - now)


@dataclass
class _WorkerResult:
    requests: int
    events: int
    durations: list[float]


def _drive(
    endpoint: str, client_kind: str, threads: int, rate_per_action: float, seconds: float
) -> _WorkerResult:
    """One worker process: `threads` pull/confirm loops until the queue is empty or `seconds`
    pass, sharing this process's share of the rate."""
    pulls, confirms = _Pacer(rate_per_action), _Pacer(rate_per_action)
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    result = _WorkerResult(0, 0, [])

    def loop() -> None:
        client = _CLIENTS[client_kind](endpoint)  # one per thread: the SDK's is not thread-safe
        durations: list[float] = []
        events = 0
        while time.monotonic() < deadline:
            pulls.wait()
            started = time.perf_counter()
            try:
                answer = client.call("PullEvents", {})
            except _ResourceNotFoundError:
                break
            durations.append(time.perf_counter() - started)
            handles = [entry["EventHandle"] for entry in answer["EventSet"]]
            events += len(handles)
            confirms.wait()
            started = time.perf_counter()
            client.call("ConfirmEvents", {"EventHandles": handles})
            durations.append(time.perf_counter() - started)
        with lock:
            result.requests += len(durations)
            result.events += events
            result.durations += durations

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return result


@dataclass(frozen=True)
class Figures:
    run: str
    client: str
    latency_ms: float
    connections: int
    seconds: float
    requests_per_second: float
    events_per_second: float
    overhead_ms_p50: float  # a request's time beyond the added latency, client CPU included
    overhead_ms_p99: float
    emulator_cpu_ms_per_request: float
    emulator_core_share: float  # of one core, while the run lasted

    def line(self) -> str:
        return (
            f"{self.run:<9} client={self.client} latency={self.latency_ms:g}ms "
            f"connections={self.connections} "
            f"requests/s={self.requests_per_second:.0f} events/s={self.events_per_second:.0f} "
            f"overhead p50={self.overhead_ms_p50:.1f}ms p99={self.overhead_ms_p99:.1f}ms "
            f"emulator cpu/request={self.emulator_cpu_ms_per_request:.2f}ms "
            f"emulator core share={self.emulator_core_share:.0%}"
        )


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def measure(
    run: str,
    *,
    client: str,
    latency_ms: float,
    events: int,
    processes: int,
    threads: int,
    rate_per_action: float,
    seconds: float,
) -> Figures:
    with (
        _emulator_process(latency_ms) as emulator,
        concurrent.futures.ProcessPoolExecutor(processes) as pool,
    ):
        EmulatorAdmin(f"http://{emulator.endpoint}", timeout=60).generate(events)
        cpu_before = _cpu_seconds(emulator.pid)
        started = time.perf_counter()
        futures = [
            pool.submit(
                _drive, emulator.endpoint, client, threads, rate_per_action / processes, seconds
            )
            for _ in range(processes)
        ]
        results = [future.result() for future in futures]
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(emulator.pid) - cpu_before
    requests = sum(r.requests for r in results)
    overheads = [d * 1000 - latency_ms for r in results for d in r.durations]
    return Figures(
        run=run,
        client=client,
        latency_ms=latency_ms,
        connections=processes * threads,
        seconds=round(elapsed, 2),
        requests_per_second=requests / elapsed,
        events_per_second=sum(r.events for r in results) / elapsed,
        overhead_ms_p50=_percentile(overheads, 0.5),
        overhead_ms_p99=_percentile(overheads, 0.99),
        emulator_cpu_ms_per_request=cpu * 1000 / max(requests, 1),
        emulator_core_share=cpu / elapsed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="backlog of the flat-out run")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per process, flat out")
    parser.add_argument(
        "--latency-ms", type=float, nargs="*", default=[30.0, 150.0], help="ceiling runs"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a ceiling run")
    parser.add_argument(
        "--ceiling-client", choices=sorted(_CLIENTS), default="raw", help="(%(default)s)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

    figures: list[Figures] = []
    for client in ("sdk", "raw"):
        figures.append(
            measure(
                "flat out",
                client=client,
                latency_ms=0,
                events=args.events,
                processes=args.processes,
                threads=args.threads,
                rate_per_action=0,
                seconds=600,
            )
        )
        print(figures[-1].line(), flush=True)
    for latency_ms in args.latency_ms:
        # A pull/confirm cycle takes two latencies: enough threads for 100 cycles a second.
        cycles_in_flight = CEILING_PER_ACTION * 2 * latency_ms / 1000
        threads = max(1, -(-int(cycles_in_flight * 1.3 + 4) // args.processes))
        figures.append(
            measure(
                "ceiling",
                client=args.ceiling_client,
                latency_ms=latency_ms,
                events=int(CEILING_PER_ACTION * EVENTS_PER_PULL * (args.seconds + 2)),
                processes=args.processes,
                threads=threads,
                rate_per_action=CEILING_PER_ACTION,
                seconds=args.seconds,
            )
        )
        print(figures[-1].line(), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")


if __name__ == "__main__":
    main()
