"""`make bench`'s script, run small: its own system comes up, every scenario is measured
and the one JSON report holds the figures the README quotes, then nothing is left behind."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

SYSTEM = {"otp", "push", "audit", "gateway", "rabbitmq", "ferretdb"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench.py", "--duration", "1.5", "--warmup", "0.2", "--users", "150", "--clients", "2",
         "--push-clients", "2", "--push-users-per-client", "2", "--otp-instances", "1", "--output", str(out),
         "--log-dir", str(ROOT / "test-artifacts" / "logs" / "bench")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == json.loads(out.read_text())   # one report, on stdout and in the file
    return json.loads(out.read_text())


def by_name(report):
    return {scenario["scenario"]: scenario for scenario in report["scenarios"]}


def test_every_scenario_is_measured_with_only_its_expected_answers(report):
    scenarios = by_name(report)
    assert "error" not in report and list(scenarios) == [
        "successful_logins", "failed_logins", "throttled_source", "push_round_trip"]
    assert set(scenarios["successful_logins"]["outcomes"]) == {"200"}
    assert set(scenarios["failed_logins"]["outcomes"]) == {"401"}
    assert scenarios["throttled_source"]["outcomes"].get("429", 0) > scenarios["throttled_source"]["logins"] / 2
    assert set(scenarios["push_round_trip"]["outcomes"]) == {"approved"}
    for scenario in scenarios.values():
        assert scenario["logins"] > 0 and scenario["latency_ms"]["p50"] > 0, scenario["scenario"]


def test_cpu_and_storage_are_per_login_per_process(report):
    for scenario in report["scenarios"]:
        cpu = scenario["cpu"]["ms_per_login"]
        assert SYSTEM | {"load_generator", "apns_server"} <= set(cpu), scenario["scenario"]
        # The system's figure is its processes' sum, without the load generator's side.
        assert scenario["cpu"]["system_ms_per_login"] == pytest.approx(sum(cpu[group] for group in SYSTEM), abs=0.1)
        assert cpu["gateway"] > 0 and cpu["ferretdb"] > 0
        assert scenario["storage_commands_per_login"]["total"] > 0
    push = by_name(report)["push_round_trip"]
    assert push["cpu"]["ms_per_login"]["push"] > 0 and push["stages_ms"]["request_to_notification"]["p50"] > 0


def test_the_targets_are_judged_on_the_measured_figures(report):
    targets = report["targets"]
    push = by_name(report)["push_round_trip"]
    assert targets["push_login_system_cpu_ms"]["measured"] == push["cpu"]["system_ms_per_login"]
    assert targets["push_login_storage_commands"]["measured"] == push["storage_commands_per_login"]["total"]
    for target in targets.values():
        assert target["met"] == (target["measured"] <= target["at_most"])
