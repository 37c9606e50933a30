from __future__ import annotations

import pytest

from rayfleet.platform import errors


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidInput("x"), 400),
        (errors.Unauthorized("x"), 401),
        (errors.Conflict("x"), 409),
        (errors.ModelNotFound("x"), 404),
        (errors.VersionNotFound("x"), 404),
        (errors.PayloadTooLarge("x"), 413),
        (errors.UnsupportedMediaType("x"), 415),
        (errors.ModelError("x"), 500),
        (errors.ServiceUnavailable("x"), 503),
        (errors.DeadlineExceeded("x"), 504),
        (errors.RayfleetError("x"), 500),
    ],
)
def test_one_status_per_error(error: errors.RayfleetError, status: int) -> None:
    assert errors.http_status(error) == status
    assert errors.error_body(error) == {"error": "x"}


def test_every_public_error_has_a_status_row() -> None:
    request_errors = [
        getattr(errors, name)
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), errors.RayfleetError)
        and getattr(errors, name) not in (errors.RayfleetError, errors.NotFound)
    ]
    for kind in request_errors:
        assert any(issubclass(kind, row) for row, _ in errors._STATUS), kind
