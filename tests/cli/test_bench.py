"""`make bench`'s script, run small: its own system comes up, every scenario is measured
and the one JSON report holds the figures the README quotes, then nothing is left behind."""
import importlib.util
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


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _a_report(code_cpu, push_cpu, push_storage, push_p99):
    return {"scenarios": [
        {"scenario": "successful_logins", "cpu": {"system_ms_per_login": code_cpu}, "latency_ms": {"p99": 1.0}},
        {"scenario": "push_round_trip", "cpu": {"system_ms_per_login": push_cpu},
         "storage_commands_per_login": {"total": push_storage}, "latency_ms": {"p99": push_p99}}]}


def test_before_and_after_are_judged_as_ratios_of_the_same_sitting():
    """Issue 10's targets read as ratios (8 -> 5 ms, 55 -> 25 ms, 35 -> 15 commands, a
    quarter of the p99): what --before prints, met only at or past each ratio."""
    bench = _bench_module()
    judged = bench.ratio_verdicts(_a_report(16.0, 110.0, 70.0, 2000.0), _a_report(10.0, 50.0, 31.0, 501.0))
    assert judged["code_login_system_cpu_ms"] == {"before": 16.0, "after": 10.0, "divided_by": 1.6,
                                                  "at_least": 1.6, "met": True}
    assert judged["push_login_system_cpu_ms"]["divided_by"] == 2.2 and judged["push_login_system_cpu_ms"]["met"]
    assert judged["push_login_storage_commands"]["divided_by"] == 2.26
    assert not judged["push_login_storage_commands"]["met"]                # asked ÷2.33
    assert judged["push_round_trip_p99_ms"]["divided_by"] == 3.99 and not judged["push_round_trip_p99_ms"]["met"]
    missing = bench.ratio_verdicts({"scenarios": []}, _a_report(10.0, 50.0, 31.0, 501.0))
    assert all(figure["divided_by"] is None and not figure["met"] for figure in missing.values())


def test_before_measures_that_commit_then_this_checkout_in_one_run(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench.py", "--before", "HEAD", "--scenarios", "push_round_trip", "--duration", "1",
         "--warmup", "0.2", "--push-clients", "1", "--push-users-per-client", "2", "--otp-instances", "1",
         "--output", str(out), "--log-dir", str(ROOT / "test-artifacts" / "logs" / "bench-before")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["before"]["code_root"] == "HEAD (git archive)" and report["after"]["code_root"] == str(ROOT)
    for side in ("before", "after"):
        assert set(by_name(report[side])["push_round_trip"]["outcomes"]) == {"approved"}, side
    push = report["ratios"]["push_login_system_cpu_ms"]
    assert push["before"] == by_name(report["before"])["push_round_trip"]["cpu"]["system_ms_per_login"]
    assert push["divided_by"] == round(push["before"] / push["after"], 2)
    assert "push_login_system_cpu_ms" in done.stderr and "÷" in done.stderr   # the table people read
