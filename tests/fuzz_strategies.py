"""Hostile requests for the fuzz tests, and what every answer to them must be.

Shared by the fast unit run (``tests/unit/fuzz``), the run against real Serve
(``tests/integration/test_fuzz.py``) and ``make fuzz``. Each strategy draws whole
requests for one format: most are structured but wrong (wrong names, datatypes,
shapes, huge, negative or zero dimensions, NaN, strings where numbers go, nested
lists of the wrong depth, odd header values), some are raw bytes. Whatever comes,
the server must answer below 500 (gRPC: not INTERNAL, UNKNOWN or a dropped
call), with a JSON ``{"error": "..."}`` for every 4xx, and still answer a good
request correctly afterwards.

``RAYFLEET_FUZZ=long`` (what ``make fuzz`` sets) multiplies the examples per
test so that a run sends at least 10,000 requests; :class:`Tally` counts them.

Over 500 lines on purpose: one strategy per format, each short, and one module
that the three runs import, so that they cannot drift apart.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import grpc
import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from rayfleet.platform.protocol import ARROW_CONTENT_TYPE
from rayfleet.platform.protocol.datatypes import DATATYPES
from rayfleet.testing import encode_arrow_request, encode_infer_request

__all__ = [
    "ADMIN_ACTIONS",
    "FAILED_GRPC_CODES",
    "GOOD_PATH",
    "LONG_EXAMPLES",
    "TALLY",
    "HttpCase",
    "Tally",
    "admin_requests",
    "arrow_requests",
    "check_good",
    "fuzz_settings",
    "good_body",
    "grpc_messages",
    "http_problem",
    "raw_requests",
    "send",
    "v1_requests",
    "v2_binary_requests",
    "v2_json_requests",
]

HEADER_LENGTH = "inference-header-content-length"
ADMIN_ACTIONS = ("promote", "rollback", "pause", "resume", "weights")

# Examples per test under RAYFLEET_FUZZ=long: eight tests make over 10,000.
LONG_EXAMPLES = 1300

# gRPC codes that mean the server failed, not the request: a bug (INTERNAL,
# UNKNOWN) or a call the server dropped (UNAVAILABLE, DATA_LOSS).
FAILED_GRPC_CODES = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for one fuzz test: ``examples`` of them, or
    :data:`LONG_EXAMPLES` under ``RAYFLEET_FUZZ=long``; no deadline, since a
    shared machine makes request times noisy."""
    long = os.environ.get("RAYFLEET_FUZZ") == "long"
    return settings(
        max_examples=LONG_EXAMPLES if long else examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )


@dataclass
class Tally:
    """How many requests a fuzz run sent, and how many got a wrong answer."""

    requests: int = 0
    failures: int = 0
    by_format: dict[str, int] = field(default_factory=dict)

    def sent(self, label: str) -> None:
        """Count one request of format ``label``."""
        self.requests += 1
        self.by_format[label] = self.by_format.get(label, 0) + 1

    def summary(self) -> str:
        """One line for the end of a run."""
        formats = ", ".join(f"{k} {v}" for k, v in sorted(self.by_format.items()))
        return (
            f"fuzz: {self.requests} requests ({formats}), {self.failures} failures "
            "(a failure's shrinking replays count as failures too)"
        )


# One count for the whole process: under RAYFLEET_FUZZ=long it is printed when
# pytest exits, after its own report, as make fuzz's last line.
TALLY = Tally()
if os.environ.get("RAYFLEET_FUZZ") == "long":
    atexit.register(lambda: print(TALLY.summary(), flush=True))


@dataclass(frozen=True)
class HttpCase:
    """One generated HTTP request. Header values are bytes, so they may hold
    what no client library would put there."""

    label: str
    method: str
    path: str
    headers: tuple[tuple[str, bytes], ...]
    body: bytes


# RFC 9110 field values: visible ASCII and obs-text, inner spaces and tabs, no
# surrounding whitespace. A real client refuses to send anything else, and an HTTP
# server answers it with its own plain-text 400 before any application sees it.
_FIELD_VALUE = re.compile(
    rb"(?:[\x21-\x7e\x80-\xff](?:[\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?)?"
)


def _on_the_wire_http(case: HttpCase) -> bool:
    """Whether every header of ``case`` is one HTTP allows on the wire, and one
    Serve's own ingress code can read.

    Serve 2.60 decodes ``x-session-id`` (its session-affinity header, the same
    name rayfleet's sticky key uses by default), ``x-request-id``,
    ``traceparent`` and its multiplexing header as strict UTF-8 before the
    router's app runs, and answers a plain 500 to anything else: a Serve bug
    rayfleet cannot catch, recorded on the hostile-input issue. In process,
    non-UTF-8 values still reach rayfleet's own code and are fuzzed there.
    """
    for _, value in case.headers:
        if not _FIELD_VALUE.fullmatch(value):
            return False
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def send(client: Any, case: HttpCase, *, over_socket: bool = False) -> None:
    """Send ``case`` with ``client`` (a TestClient or httpx.Client over the
    router's app) and fail, counted in :data:`TALLY`, on a wrong answer.

    ``over_socket``: the request crosses a real HTTP server. A header that is not
    valid HTTP then never reaches rayfleet (the client refuses it, or the server
    answers its own 400), so such a case is not generated there.
    """
    if over_socket:
        assume(_on_the_wire_http(case))
    TALLY.sent(case.label)
    try:
        response = client.request(
            case.method, case.path, content=case.body, headers=list(case.headers)
        )
    except Exception as error:
        # In process: the app raised; over a socket: the server dropped the call.
        TALLY.failures += 1
        raise AssertionError(f"no answer to {case!r}: {error!r}") from error
    problem = http_problem(
        case, response.status_code, response.headers, response.content
    )
    if problem is not None:
        TALLY.failures += 1
        raise AssertionError(problem)


# A request with a known answer, sent after every generated one: the first
# digits of the demo's test split, to the stable version.
GOOD_PATH = "/v2/models/digits/versions/v1/infer"


def good_body(rows: np.ndarray) -> dict[str, Any]:
    """The v2 JSON body of ``rows`` for the digits models."""
    return {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.flatten().tolist(),
            }
        ]
    }


def check_good(client: Any, rows: np.ndarray, labels: list[int]) -> None:
    """Fail, counted in :data:`TALLY`, unless the router still labels ``rows``
    as ``labels``."""
    TALLY.sent("good")
    response = client.post(GOOD_PATH, json=good_body(rows))
    if response.status_code != 200:
        TALLY.failures += 1
        raise AssertionError(f"a good request then got {response.status_code}")
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    if outputs.get("label") != labels:
        TALLY.failures += 1
        raise AssertionError(f"a good request then got {outputs.get('label')}")


def http_problem(case: HttpCase, status: int, headers: Any, body: bytes) -> str | None:
    """What is wrong with ``status``/``body`` as the answer to ``case``, or None."""
    if status >= 500:
        return f"{status} for {case!r}: {body[:300]!r}"
    if 400 <= status < 500:
        content_type = headers.get("content-type", "")
        if not content_type.startswith("application/json"):
            return f"{status} is not JSON ({content_type!r}) for {case!r}"
        try:
            payload = json.loads(body)
        except ValueError:
            return f"{status} body is not JSON for {case!r}: {body[:300]!r}"
        if not isinstance(payload, dict) or not isinstance(payload.get("error"), str):
            return f"{status} body has no 'error' string for {case!r}: {payload!r}"
    return None


# -- pieces -----------------------------------------------------------------

_INT64_MAX = 2**63 - 1

# Dimensions: mostly plausible, often hostile.
dims = st.one_of(
    st.integers(0, 8),
    st.sampled_from([64, -1, -2, 0, 1, 2**31, 2**32 + 1, _INT64_MAX, 2**63, 2**64]),
    st.integers(-(2**70), 2**70),
)

shapes = st.one_of(
    st.lists(dims, min_size=0, max_size=4),
    st.builds(lambda n: [n, 64], st.integers(0, 4)),
    st.builds(lambda rank: [1] * rank, st.integers(30, 70)),
    st.just([0, _INT64_MAX]),
    st.just([_INT64_MAX, _INT64_MAX]),
)

# Shapes that fit protobuf's int64 shape field.
shapes_int64 = shapes.map(
    lambda shape: [max(-(2**63), min(_INT64_MAX, d)) for d in shape]
)

names = st.one_of(
    st.sampled_from(["input", "input", "INPUT", "label", "probabilities", ""]),
    st.text(max_size=12),
)

datatypes = st.one_of(
    st.sampled_from(DATATYPES),
    st.sampled_from(["FP32", "FP32", "fp32", "FLOAT", "INT128", "", "BYTES"]),
    st.text(max_size=8),
)

scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.text(max_size=8),
    st.none(),
    st.just({"b64": "AAAA"}),
)

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text()),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _nested(depth: int, width: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] * width
    return value


data_values = st.one_of(
    st.lists(st.floats(-10, 20, width=32), min_size=64, max_size=64),
    st.lists(scalars, max_size=130),
    st.builds(_nested, st.integers(0, 6), st.integers(0, 3), scalars),
    st.builds(lambda n: [0.5] * n, st.sampled_from([0, 63, 64, 65, 128, 640])),
    scalars,
    json_values,
)

paths_model = st.one_of(
    st.just("digits"),
    st.just("digits"),
    st.text(max_size=10).map(lambda s: quote(s, safe="")),
)

paths_version = st.one_of(
    st.none(),
    st.sampled_from(["v1", "v2", "v3"]),
    st.text(max_size=10).map(lambda s: quote(s, safe="")),
    st.sampled_from(["v1%00", "v1%0d%0ax-evil:%201", "%ff", "..", "%2e%2e"]),
)

# Header values a client could put on the wire: latin-1 minus CR, LF and NUL.
header_values = st.one_of(
    st.binary(max_size=12).map(
        lambda b: bytes(c for c in b if c not in b"\r\n\x00" and c >= 0x20)
    ),
    st.sampled_from([b"9" * 5000, b"\xb2", b"-1", b"+5", b" 5", b"1e3", b"0x10"]),
    st.integers(-5, 2**70).map(lambda n: str(n).encode()),
)


@st.composite
def _infer_path(draw: st.DrawFn) -> str:
    model, version = draw(paths_model), draw(paths_version)
    if version is None:
        return f"/v2/models/{model}/infer"
    return f"/v2/models/{model}/versions/{version}/infer"


@st.composite
def _odd_headers(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    headers: list[tuple[str, bytes]] = []
    if draw(st.booleans()):
        headers.append(("x-model-version", draw(header_values)))
    if draw(st.integers(0, 3)) == 0:
        headers.append(("x-session-id", draw(header_values)))
    return headers


# -- v2 JSON ----------------------------------------------------------------


@st.composite
def _tensor(draw: st.DrawFn) -> Any:
    tensor: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        tensor["name"] = draw(names)
    if draw(st.integers(0, 9)):
        tensor["datatype"] = draw(datatypes)
    if draw(st.integers(0, 9)):
        tensor["shape"] = draw(st.one_of(shapes, json_values))
    if draw(st.integers(0, 9)):
        tensor["data"] = draw(data_values)
    if draw(st.integers(0, 4)) == 0:
        tensor["parameters"] = draw(
            st.one_of(
                json_values,
                st.fixed_dictionaries({"binary_data_size": st.integers(-5, 2**65)}),
            )
        )
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    return tensor


@st.composite
def _v2_document(draw: st.DrawFn) -> Any:
    document: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        document["inputs"] = draw(
            st.one_of(st.lists(_tensor(), max_size=3), json_values)
        )
    if draw(st.integers(0, 3)) == 0:
        document["outputs"] = draw(
            st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": names},
                        optional={"parameters": json_values},
                    ),
                    max_size=3,
                ),
                json_values,
            )
        )
    if draw(st.integers(0, 3)) == 0:
        document["parameters"] = draw(
            st.one_of(
                st.fixed_dictionaries({"binary_data_output": json_values}),
                json_values,
            )
        )
    if draw(st.integers(0, 5)) == 0:
        document["id"] = draw(json_values)
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)
    return document


@st.composite
def v2_json_requests(draw: st.DrawFn) -> HttpCase:
    """KServe v2 JSON bodies, structured but wrong, to the infer routes."""
    body = json.dumps(draw(_v2_document())).encode()
    headers = [("content-type", b"application/json"), *draw(_odd_headers())]
    return HttpCase("v2-json", "POST", draw(_infer_path()), tuple(headers), body)


# -- v2 binary --------------------------------------------------------------


@st.composite
def v2_binary_requests(draw: st.DrawFn) -> HttpCase:
    """A v2 JSON header with binary tensors after it, sized right or wrong, and
    an Inference-Header-Content-Length that may lie or not be a number."""
    tensors = []
    for _ in range(draw(st.integers(0, 2))):
        tensor = {"name": draw(names), "datatype": draw(datatypes)}
        tensor["shape"] = draw(shapes)
        tensor["parameters"] = {
            "binary_data_size": draw(
                st.one_of(st.integers(0, 300), st.integers(-(2**65), 2**65))
            )
        }
        tensors.append(tensor)
    header_obj: dict[str, Any] = {"inputs": tensors}
    if draw(st.booleans()):
        header_obj["outputs"] = [
            {"name": "label", "parameters": {"binary_data": draw(json_values)}}
        ]
    header = json.dumps(header_obj).encode()
    rows = draw(st.integers(0, 3))
    payload = draw(
        st.one_of(
            st.just(np.zeros((rows, 64), np.float32).tobytes()),
            st.binary(max_size=300),
            st.just(struct.pack("<I", 5) + b"hello"),
        )
    )
    length = draw(
        st.one_of(
            st.just(str(len(header)).encode()),
            st.integers(-3, len(header) + len(payload) + 3).map(
                lambda n: str(n).encode()
            ),
            # Digits int() refuses or misreads: too many, or not ASCII.
            st.sampled_from([b"9" * 5000, b"\xb2", "\u0661".encode(), b"", b"1_0"]),
            header_values,
        )
    )
    headers = [(HEADER_LENGTH, length), *draw(_odd_headers())]
    if draw(st.booleans()):
        headers.append(("content-type", b"application/octet-stream"))
    body = header + payload
    return HttpCase("v2-binary", "POST", draw(_infer_path()), tuple(headers), body)


# -- v1 ---------------------------------------------------------------------


@st.composite
def v1_requests(draw: st.DrawFn) -> HttpCase:
    """``:predict`` bodies: rows or columns of the wrong depth, names, types."""
    kind = draw(st.sampled_from(["instances", "inputs", "other"]))
    if kind == "other":
        document: Any = draw(json_values)
    else:
        value = draw(
            st.one_of(
                data_values,
                st.lists(data_values, max_size=3),
                st.dictionaries(names, data_values, max_size=2),
                st.lists(st.dictionaries(names, data_values, max_size=2), max_size=3),
            )
        )
        document = {kind: value}
        if draw(st.integers(0, 4)) == 0:
            document["signature_name"] = draw(json_values)
    model = draw(paths_model)
    body = json.dumps(document).encode()
    return HttpCase(
        "v1",
        "POST",
        f"/v1/models/{model}:predict",
        (("content-type", b"application/json"), *draw(_odd_headers())),
        body,
    )


# -- Arrow ------------------------------------------------------------------

_NUMPY_DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int64,
    np.int8,
    np.uint32,
    np.bool_,
]


@st.composite
def _arrow_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    rows = draw(st.integers(0, 3))
    for _ in range(draw(st.integers(1, 2))):
        dtype = draw(st.sampled_from(_NUMPY_DTYPES))
        inner = draw(
            st.one_of(
                st.just([64]),
                st.lists(st.integers(0, 5), min_size=0, max_size=3),
            )
        )
        values = draw(
            st.sampled_from([0.0, 1.5, float("nan"), float("inf"), -1.0, 1e30])
        )
        with np.errstate(all="ignore"):
            arrays[draw(names)] = np.full((rows, *inner), values).astype(dtype)
    return arrays


@st.composite
def _arrow_with_metadata(draw: st.DrawFn) -> bytes:
    """A fixed-size-list column whose field metadata claims some shape."""
    rows = draw(st.integers(0, 2))
    width = draw(st.sampled_from([1, 2, 64]))
    values = pa.array(np.zeros(rows * width, np.float32))
    column = pa.FixedSizeListArray.from_arrays(values, width)
    shape = draw(
        st.one_of(
            st.just([64]),
            st.just([8, 8]),
            st.builds(lambda r: [1] * r, st.integers(30, 70)),
            st.just([0, _INT64_MAX]),
            st.lists(dims, max_size=4),
            json_values,
        )
    )
    metadata = {b"shape": json.dumps(shape).encode()}
    if draw(st.booleans()):
        metadata[b"datatype"] = draw(datatypes).encode()
    name = draw(names)
    schema = pa.schema([pa.field(name, column.type, metadata=metadata)])
    batch = pa.RecordBatch.from_arrays([column], schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def _mangle(body: bytes, cut: int, flip: int) -> bytes:
    if not body:
        return body
    data = bytearray(body[: max(0, len(body) - cut)])
    if data and flip:
        data[flip % len(data)] ^= 0xFF
    return bytes(data)


@st.composite
def arrow_requests(draw: st.DrawFn) -> HttpCase:
    """Arrow IPC streams: odd dtypes and shapes, field metadata claiming any
    shape, truncated or corrupted streams, and raw bytes."""
    source = draw(st.sampled_from(["arrays", "metadata", "raw"]))
    if source == "arrays":
        body = encode_arrow_request(draw(_arrow_arrays()))
    elif source == "metadata":
        body = draw(_arrow_with_metadata())
    else:
        body = draw(st.binary(max_size=400))
    if draw(st.integers(0, 3)) == 0:
        body = _mangle(body, draw(st.integers(0, 40)), draw(st.integers(0, 2**16)))
    headers = [("content-type", ARROW_CONTENT_TYPE.encode()), *draw(_odd_headers())]
    return HttpCase("arrow", "POST", draw(_infer_path()), tuple(headers), body)


# -- raw bytes ----------------------------------------------------------------


@st.composite
def raw_requests(draw: st.DrawFn) -> HttpCase:
    """Arbitrary bytes, any content type, to any route of the router's app."""
    path = draw(
        st.one_of(
            _infer_path(),
            st.builds(lambda m: f"/v1/models/{m}:predict", paths_model),
            st.sampled_from(["/v2", "/v2/health/ready", "/v2/models/digits"]),
            # One leading slash: "//x" would name a host, not a path.
            st.text(max_size=20).map(lambda s: "/" + quote(s, safe="/").lstrip("/")),
        )
    )
    content_type = draw(
        st.one_of(
            st.sampled_from(
                [
                    b"application/json",
                    ARROW_CONTENT_TYPE.encode(),
                    ARROW_CONTENT_TYPE.encode() + b"; charset=\xff",
                    b"application/octet-stream",
                    b"text/plain",
                ]
            ),
            header_values,
        )
    )
    headers = [("content-type", content_type), *draw(_odd_headers())]
    if draw(st.integers(0, 3)) == 0:
        headers.append((HEADER_LENGTH, draw(header_values)))
    method = draw(st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE"]))
    body = draw(st.binary(max_size=600))
    return HttpCase("raw", method, path, tuple(headers), body)


# -- gRPC ModelInfer ----------------------------------------------------------


@st.composite
def _grpc_hand_built(draw: st.DrawFn) -> bytes:
    """A ModelInferRequest with any names, datatypes, shapes and contents."""
    message = service_pb2.ModelInferRequest(
        model_name=draw(st.sampled_from(["digits", "digits", "", "nope"])),
        model_version=draw(st.sampled_from(["", "v1", "v9", "v1\x00", "\r\n"])),
    )
    for _ in range(draw(st.integers(0, 2))):
        tensor = message.inputs.add(name=draw(names), datatype=draw(datatypes))
        shape = draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4))
        tensor.shape.extend(draw(st.one_of(st.just(shape), shapes_int64)))
        contents = draw(st.sampled_from(["raw", "fp32", "int64", "bytes", "none"]))
        if contents == "raw":
            message.raw_input_contents.append(draw(st.binary(max_size=300)))
        elif contents == "fp32":
            tensor.contents.fp32_contents.extend(
                draw(st.lists(st.floats(width=32), max_size=130))
            )
        elif contents == "int64":
            tensor.contents.int64_contents.extend(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=70))
            )
        elif contents == "bytes":
            tensor.contents.bytes_contents.extend(
                draw(st.lists(st.binary(max_size=8), max_size=4))
            )
    if draw(st.booleans()):
        message.raw_input_contents.append(draw(st.binary(max_size=64)))
    for _ in range(draw(st.integers(0, 2))):
        message.outputs.add(name=draw(names))
    return bytes(message.SerializeToString())


@st.composite
def grpc_messages(draw: st.DrawFn) -> bytes:
    """Serialized ModelInferRequests: tritonclient's encoding of odd arrays,
    hand-built messages, and raw or corrupted bytes."""
    source = draw(st.sampled_from(["encoded", "hand", "hand", "raw"]))
    if source == "encoded":
        arrays = draw(_arrow_arrays())
        message = encode_infer_request(
            "digits",
            arrays,
            version=draw(st.sampled_from(["", "v1", "v2"])),
            outputs=draw(st.lists(names, max_size=2)),
        )
        wire = bytes(message.SerializeToString())
    elif source == "hand":
        wire = draw(_grpc_hand_built())
    else:
        wire = draw(st.binary(max_size=400))
    if draw(st.integers(0, 4)) == 0:
        wire = _mangle(wire, draw(st.integers(0, 20)), draw(st.integers(0, 2**16)))
    return wire


# -- the admin API ------------------------------------------------------------


@st.composite
def admin_requests(
    draw: st.DrawFn, token: str | None, models: tuple[str, ...] = ("digits",)
) -> HttpCase:
    """Admin and page routes with odd bodies and query strings; with the right
    token when ``token`` is given, else with none or a wrong one.

    ``models`` are the names put in paths and validation jobs: a run against a
    shared app passes names it does not serve, so a valid body changes nothing.
    """
    model = draw(
        st.one_of(
            st.sampled_from(models),
            st.text(min_size=1, max_size=10).map(lambda s: quote(s, safe="")),
        )
    )
    route = draw(
        st.sampled_from(["action", "action", "weights", "validations", "page", "job"])
    )
    body = b""
    method = "POST"
    if route in ("action", "weights"):
        action = (
            "weights" if route == "weights" else draw(st.sampled_from(ADMIN_ACTIONS))
        )
        path = f"/-/rollouts/{model}/{action}"
        body = draw(
            st.one_of(
                st.builds(
                    lambda w: json.dumps({"weight": w}).encode(),
                    st.one_of(
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(-(2**70), 2**70),
                        json_values,
                    ),
                ),
                st.builds(lambda v: json.dumps(v).encode(), json_values),
                st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
                st.binary(max_size=100),
                st.just(b""),
            )
        )
    elif route == "validations":
        path = "/-/validations"
        body = draw(
            st.one_of(
                st.builds(
                    lambda d: json.dumps(d).encode(),
                    st.fixed_dictionaries(
                        {
                            "model": st.one_of(st.sampled_from(models), st.text()),
                            "candidate": st.one_of(
                                st.sampled_from(["v1", "v2", "v9"]), st.text()
                            ),
                            "baseline": st.one_of(st.just("v1"), json_values),
                        },
                        optional={
                            "batch_size": json_values,
                            "data": st.one_of(st.text(), json_values),
                        },
                    ),
                ),
                st.builds(lambda v: json.dumps(v).encode(), json_values),
                st.binary(max_size=100),
            )
        )
    elif route == "page":
        method = "GET"
        window = draw(
            st.one_of(
                st.floats().map(repr),
                st.text(max_size=8),
                st.sampled_from(["nan", "inf", "-0", "1e999", "\u0661"]),
            )
        )
        path = "/-/validation?window_s=" + quote(window, safe="")
    else:
        method = "GET"
        path = "/-/validations/" + quote(draw(st.text(max_size=12)), safe="")
    headers: list[tuple[str, bytes]] = [("content-type", b"application/json")]
    if token is not None:
        headers.append(("authorization", b"Bearer " + token.encode()))
    else:
        sent = draw(
            st.one_of(
                st.none(),
                header_values.map(lambda v: b"Bearer " + v),
                header_values,
            )
        )
        if sent is not None:
            headers.append(("authorization", sent))
    label = "admin" if token is not None else "admin-no-token"
    return HttpCase(label, method, path, tuple(headers), body)
