"""The controller manager's pure parts: --controllers selection, flag errors, the event shape."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orchestrator.controllers.base import EventRecorder, EventSink
from orchestrator.controllers.cli import controllers
from orchestrator.controllers.manager import CONTROLLERS, select_controllers
from orchestrator.controllers.testing import replicaset


def test_star_selects_all_and_minus_removes():
    assert select_controllers(["*"]) == list(CONTROLLERS)
    chosen = select_controllers(["*,-garbagecollector,-podgc"])
    assert "garbagecollector" not in chosen and "podgc" not in chosen and "deployment" in chosen
    assert select_controllers(["replicaset,endpoint"]) == ["replicaset", "endpoint"]
    assert select_controllers([""]) == list(CONTROLLERS)


def test_unknown_controller_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown controller 'replicasets'"):
        select_controllers(["replicasets"])
    result = CliRunner().invoke(controllers, ["--controllers", "bogus"])
    assert result.exit_code == 2 and "unknown controller 'bogus'" in result.output
    assert "Traceback" not in result.output


def test_bad_flags_are_usage_errors():
    runner = CliRunner()
    result = runner.invoke(controllers, ["--server", "not a url"])
    assert result.exit_code == 2 and "is not an http(s) URL" in result.output
    result = runner.invoke(controllers, ["--node-monitor-grace-period", "soon"])
    assert result.exit_code == 2 and "is not a duration" in result.output
    result = runner.invoke(
        controllers, ["--leader-elect-lease-duration", "1s", "--leader-elect-renew-deadline", "2s"]
    )
    assert result.exit_code == 2 and "lease duration > renew deadline" in result.output
    result = runner.invoke(controllers, ["--node-monitor-grace-period", "1s", "--node-monitor-period", "5s"])
    assert result.exit_code == 2 and "must be longer" in result.output


def test_recorder_queues_events_with_the_involved_object_reference():
    class Sink(EventSink):
        def __init__(self) -> None:  # no client: only the queue matters here
            self.records = []

        def put(self, record) -> None:
            self.records.append(record)

    sink = Sink()
    rs = replicaset("web")
    EventRecorder(sink, "replicaset-controller").normal(rs, "SuccessfulCreate", "Created pod: web-abc")
    (rec,) = sink.records
    assert rec.component == "replicaset-controller" and rec.type == "Normal"
    assert rec.involved["kind"] == "ReplicaSet" and rec.involved["apiVersion"] == "apps/v1"
    assert rec.involved["metadata"]["uid"] == rs["metadata"]["uid"]
    assert rec.involved["metadata"]["namespace"] == "default"
