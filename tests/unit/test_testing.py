"""rayfleet.testing: a tested ``__all__``, documented, and no product code uses it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np

import rayfleet
import rayfleet.testing as testing
from rayfleet.platform.protocol import decode_arrow_request
from rayfleet.platform.protocol.grpc_codec import decode_infer_request

PACKAGE = Path(rayfleet.__file__).parent


def test_all_names_what_the_module_defines() -> None:
    defined = {
        name
        for name, value in vars(testing).items()
        if not name.startswith("_")
        and inspect.isfunction(value)
        and value.__module__ == testing.__name__
    }
    assert set(testing.__all__) == defined
    assert all(inspect.getdoc(getattr(testing, name)) for name in testing.__all__)


def test_no_product_module_imports_it() -> None:
    importers = []
    for source in PACKAGE.rglob("*.py"):
        if source == Path(testing.__file__):
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [
                    f"{node.module}.{alias.name}" for alias in node.names
                ]
            if "rayfleet.testing" in names:
                importers.append(str(source.relative_to(PACKAGE.parent)))
    assert importers == []


def test_the_encoders_speak_the_servers_protocols() -> None:
    inputs = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    arrow = decode_arrow_request(testing.encode_arrow_request(inputs, request_id="r"))
    assert arrow.id == "r"
    np.testing.assert_array_equal(arrow.inputs["x"], inputs["x"])
    message = testing.encode_infer_request("m", inputs, version="v1", outputs=["y"])
    call = decode_infer_request(message.SerializeToString())
    assert (call.model_name, call.model_version) == ("m", "v1")
    np.testing.assert_array_equal(call.request.inputs["x"], inputs["x"])
    assert [wanted.name for wanted in call.request.outputs] == ["y"]
