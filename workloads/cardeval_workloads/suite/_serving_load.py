"""The serving client: one request over either protocol, and closed-loop concurrent load with its latencies.

:class:`Client` speaks the Open Inference Protocol v2 through ``tritonclient``
over HTTP (JSON tensors: MLServer does not take Triton's binary extension) or
gRPC, and returns each answer with the response parameters the runtime set
(where it ran). :func:`closed_loop` is ``concurrency`` threads, each with its
own client, each sending its next request as soon as the last was answered,
for ``duration_s``: every latency (request sent to answer received,
:func:`time.perf_counter`) kept, every answer decoded and checked once the
clock has stopped. The rate is the answered requests over the span from the
first send to the last answer.

The benchmark ``bench/serving_client.py`` runs :func:`closed_loop` beside a
bare ``tritonclient`` loop on the same server: the measuring must not be what
limits the rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOLS = ("http", "grpc")
_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


@dataclass(frozen=True)
class Answer:
    value: np.ndarray
    #: The response parameters: the device (and provider) the runtime ran the request on.
    where: dict[str, str]


@dataclass(frozen=True)
class Prepared:
    """A request built once (its tensors encoded), to be sent any number of times, from any thread."""

    model: str
    tensors: list[Any]
    outputs: list[Any]
    output: str


class Client:
    """One connection to the server over ``protocol`` (``http`` or ``grpc``)."""

    def __init__(self, protocol: str, url: str, timeout_s: float = 60.0) -> None:
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._module = _module(protocol)
        if protocol == "http":
            self._client: Any = self._module.InferenceServerClient(url, network_timeout=timeout_s,
                                                                   connection_timeout=timeout_s)
        else:
            self._client = self._module.InferenceServerClient(url)

    @property
    def raw(self) -> Any:
        """The tritonclient client itself (readiness, the repository API)."""
        return self._client

    def send(self, request: Prepared) -> Any:
        """The server's answer, received and parsed (tritonclient's InferResult), not yet decoded."""
        if self.protocol == "http":
            return self._client.infer(request.model, request.tensors, outputs=request.outputs,
                                      timeout=int(self.timeout_s))
        return self._client.infer(request.model, request.tensors, outputs=request.outputs,
                                  client_timeout=self.timeout_s)

    def decode(self, request: Prepared, result: Any) -> Answer:
        """The output tensor and the response parameters (where it ran) of an answer."""
        if self.protocol == "http":
            where = {k: str(v) for k, v in (result.get_response().get("parameters") or {}).items()}
        else:
            where = {k: v.string_param for k, v in result.get_response().parameters.items()}
        value = result.as_numpy(request.output)
        if value is None:
            raise ValueError(f"the answer of {request.model} has no output {request.output!r}")
        return Answer(value, where)

    def infer(self, model: str, inputs: Sequence[tuple[str, np.ndarray]], output: str) -> Answer:
        request = prepare(self.protocol, model, inputs, output)
        return self.decode(request, self.send(request))

    def close(self) -> None:
        self._client.close()


def _module(protocol: str) -> Any:
    if protocol == "http":
        import tritonclient.http
        return tritonclient.http
    if protocol == "grpc":
        import tritonclient.grpc
        return tritonclient.grpc
    raise ValueError(f"protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")


def prepare(protocol: str, model: str, inputs: Sequence[tuple[str, np.ndarray]], output: str) -> Prepared:
    module = _module(protocol)
    tensors = []
    for name, value in inputs:
        tensor = module.InferInput(name, list(value.shape), _DATATYPES[value.dtype])
        if protocol == "http":
            tensor.set_data_from_numpy(value, binary_data=False)
        else:
            tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    wanted = module.InferRequestedOutput(output, binary_data=False) if protocol == "http" \
        else module.InferRequestedOutput(output)
    return Prepared(model, tensors, [wanted], output)


#: One request of a load: (model, inputs, output name, check of the answer → None if right, else why not).
Request = tuple[str, Sequence[tuple[str, np.ndarray]], str, Callable[[Answer], str | None]]


@dataclass
class Load:
    """What a closed-loop run saw."""

    protocol: str
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    #: Answers that came back wrong (why, for the first few) and requests that failed outright.
    wrong: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    span_s: float = 0.0

    @property
    def answered(self) -> int:
        return len(self.latencies_s)

    @property
    def rate(self) -> float:
        return self.answered / self.span_s if self.span_s > 0 else 0.0

    @property
    def correct(self) -> bool:
        return self.answered > 0 and self.wrong == 0 and self.failed == 0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies_s), q) * 1000) if self.latencies_s else float("nan")

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.latencies_s) * 1000) if self.latencies_s else float("nan")

    def summary(self) -> str:
        return (f"{self.protocol}, {self.concurrency} concurrent clients: {self.answered} answered in "
                f"{self.span_s:.2f} s ({self.rate:.1f} requests/s), {self.wrong} wrong, {self.failed} failed; "
                f"latency mean {self.mean_ms:.2f} ms, p50 {self.percentile_ms(50):.2f}, "
                f"p90 {self.percentile_ms(90):.2f}, p99 {self.percentile_ms(99):.2f} ms")


def closed_loop(protocol: str, url: str, requests: Sequence[Request], concurrency: int, duration_s: float) -> Load:
    """``concurrency`` clients sending ``requests`` (each client from its own offset, cycling) for ``duration_s``.

    The requests are encoded once, before the clock starts; each answer is decoded and checked after it
    stops, so the timed loop is what a bare client's is: send, wait, count (and note the time)."""
    load = Load(protocol, concurrency)
    lock = threading.Lock()
    prepared = [prepare(protocol, model, inputs, output) for model, inputs, output, _ in requests]
    clients = [Client(protocol, url) for _ in range(concurrency)]
    ready = threading.Barrier(concurrency + 1)
    start: list[float] = []
    ends: list[float] = []

    def worker(rank: int, client: Client) -> None:
        latencies: list[float] = []
        answered: list[tuple[int, Any]] = []
        failed = 0
        problems: list[str] = []
        i = rank * len(requests) // concurrency
        ready.wait()
        deadline = start[0] + duration_s
        last = start[0]
        while time.perf_counter() < deadline:
            j = i % len(requests)
            i += 1
            sent = time.perf_counter()
            try:
                result = client.send(prepared[j])
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failed += 1
                if len(problems) < 3:
                    problems.append(f"{requests[j][0]}: {type(exc).__name__}: {exc}"[:300])
                continue
            last = time.perf_counter()
            latencies.append(last - sent)
            answered.append((j, result))
        wrong = 0
        for j, result in answered:
            try:
                why = requests[j][3](client.decode(prepared[j], result))
            except Exception as exc:  # noqa: BLE001 - an undecodable answer is a wrong one
                why = f"{type(exc).__name__}: {exc}"[:300]
            if why is not None:
                wrong += 1
                if len(problems) < 3:
                    problems.append(f"{requests[j][0]}: {why}")
        with lock:
            load.latencies_s += latencies
            load.wrong += wrong
            load.failed += failed
            load.problems += problems[:max(0, 5 - len(load.problems))]
            ends.append(last)

    threads = [threading.Thread(target=worker, args=(rank, client), daemon=True)
               for rank, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    start.append(time.perf_counter())
    ready.wait()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    load.span_s = max(ends) - start[0] if ends else 0.0
    return load
