"""``rayfleet rollout history``: the table, and the arguments it refuses."""

from __future__ import annotations

import pytest

from rayfleet.cli.main import main
from rayfleet.cli.rollout import format_history
from rayfleet.platform.rollout import GateResult, Phase, Verdict
from rayfleet.platform.rollout.history import Caller, HistoryEntry

T0 = 1_764_403_200.0  # 2025-11-29 08:00:00 UTC

ENTRIES = [
    HistoryEntry(
        ts=T0,
        app="demo",
        model="digits",
        kind="rollout_started",
        canary="v2",
        stable="v1",
        phase=Phase.PENDING,
        weight=0.0,
        reason="rollout of v2 over v1: 5% -> 100%",
    ),
    HistoryEntry(
        ts=T0 + 11.6,
        app="demo",
        model="digits",
        kind="rolled_back",
        canary="v2",
        stable="v1",
        phase=Phase.ROLLED_BACK,
        weight=0.0,
        reason="gates failed on 549 canary requests: model_p99_ratio 2.182 > max 2",
        gates=(
            GateResult("model_p99_ratio", 2.182, 2.0, "max", Verdict.FAIL, "bound"),
            GateResult("error_rate_delta", None, 0.01, "max", Verdict.FAIL, "no data"),
            GateResult("prediction_js", 0.01, 0.1, "max", Verdict.PASS),
        ),
    ),
    HistoryEntry(
        ts=T0 + 20,
        app="demo",
        model="digits",
        kind="weight_set",
        canary="v3",
        stable="v1",
        phase=Phase.CANARY,
        weight=12.5,
        reason="operator: weight 12.5%",
        caller=Caller("10.0.0.7", "alice@laptop"),
    ),
    HistoryEntry(
        ts=T0 + 30,
        app="demo",
        model="digits",
        kind="paused",
        canary="v3",
        stable="v1",
        phase=Phase.PAUSED,
        weight=12.5,
        reason="operator: pause",
        caller=Caller(),
    ),
]


def test_the_table_shows_each_decision_and_its_failing_gates() -> None:
    assert format_history(ENTRIES).splitlines() == [
        "TIME (UTC)           KIND             PHASE        WEIGHT  CANARY  "
        "BY                       REASON",
        "2025-11-29 08:00:00  rollout_started  pending      0%      v2      "
        "validator                rollout of v2 over v1: 5% -> 100%",
        "2025-11-29 08:00:11  rolled_back      rolled_back  0%      v2      "
        "validator                gates failed on 549 canary requests: "
        "model_p99_ratio 2.182 > max 2",
        "    failed: model_p99_ratio 2.182 > max 2 (bound)",
        "    failed: error_rate_delta fail: no data",
        "2025-11-29 08:00:20  weight_set       canary       12.5%   v3      "
        "alice@laptop (10.0.0.7)  operator: weight 12.5%",
        "2025-11-29 08:00:30  paused           paused       12.5%   v3      "
        "operator                 operator: pause",
    ]


def test_an_empty_history_says_so() -> None:
    assert format_history([]) == "no rollout history\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--limit", "0"], "argument --limit: must lie in [1, 1000]: 0"),
        (["--limit", "1001"], "argument --limit: must lie in [1, 1000]: 1001"),
        (["--limit", "ten"], "argument --limit: not a whole number: 'ten'"),
        (["--limit", "2.5"], "argument --limit: not a whole number: '2.5'"),
    ],
)
def test_a_bad_limit_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["rollout", "history", "--model", "digits", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_history_needs_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollout", "history", "--url", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == "rayfleet: rollout history needs --model\n"
