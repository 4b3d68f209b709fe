"""bench.proxy_overhead's arithmetic (`bench.report`): ratios per mode, a reference proxy beside the control
plane, and targets judged on the control plane alone. The whole benchmark runs real Triton, nginx, wrk and
h2load; this checks what it prints from their numbers."""

from __future__ import annotations

import numpy as np
import pytest

from bench import report

MS = 1_000_000


def _agg(
    requests: int, seconds: float, p50_ms: float, *, cpu: dict[str, float] | None = None
) -> report.Aggregate:
    agg = report.Aggregate()
    latencies = np.full(requests, int(p50_ms * MS), dtype=np.int64)
    agg.add({"requests": requests, "errors": 0, "elapsed_s": seconds}, latencies, cpu or {})
    return agg


def _results(*, proxy_rps: int, nginx_rps: int, proxy_p50: float, nginx_p50: float) -> report.Results:
    return {
        1: {
            "direct": _agg(1000, 1.0, 0.5),
            "proxy": _agg(1000, 1.0, proxy_p50),
            "nginx": _agg(1000, 1.0, nginx_p50),
        },
        64: {
            "direct": _agg(10_000, 1.0, 6.0),
            "proxy": _agg(proxy_rps, 1.0, 9.0, cpu={"proxy": proxy_rps * 200e-6}),
            "nginx": _agg(nginx_rps, 1.0, 7.0, cpu={"proxy": nginx_rps * 50e-6}),
        },
    }


def test_each_mode_has_its_own_ratio_and_cpu_per_request() -> None:
    results = _results(proxy_rps=5300, nginx_rps=7700, proxy_p50=0.8, nginx_p50=0.6)
    assert report.ratio(results, 64) == pytest.approx(0.53)
    assert report.ratio(results, 64, "nginx") == pytest.approx(0.77)
    assert results[64]["proxy"].cpu_us_per_request("proxy") == pytest.approx(200)
    assert results[64]["nginx"].cpu_us_per_request("proxy") == pytest.approx(50)


def test_targets_judge_the_control_plane_not_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    """A reference proxy that meets both targets does not make a missing control plane pass, and one that
    misses them does not fail a control plane that meets them."""
    missed = _results(proxy_rps=5300, nginx_rps=9500, proxy_p50=0.9, nginx_p50=0.6)
    assert not report.print_targets(missed, min_ratio=0.9, max_added_p50_ms=0.3)
    out = capsys.readouterr().out
    assert "0.530 -> MISSED" in out and "0.400 ms -> MISSED" in out
    met = _results(proxy_rps=9200, nginx_rps=5000, proxy_p50=0.7, nginx_p50=1.5)
    assert report.print_targets(met, min_ratio=0.9, max_added_p50_ms=0.3)


def test_the_table_has_a_row_per_mode(capsys: pytest.CaptureFixture[str]) -> None:
    results = _results(proxy_rps=5300, nginx_rps=7700, proxy_p50=0.8, nginx_p50=0.6)
    report.print_table(results, ["proxy"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
    ratios = {(row[0], row[1]): row[2:] for row in rows if len(row) == 5 and row[0] in {"1", "64"}}
    assert ratios[("64", "proxy")][0] == "0.530" and ratios[("64", "nginx")][0] == "0.770"
    assert ratios[("1", "proxy")][1] == "0.300" and ratios[("1", "nginx")][1] == "0.100"


def test_a_generator_without_raw_latencies_gives_the_median_of_its_runs() -> None:
    """wrk reports its own percentiles: the pooled figure is their median, not a mean or the last run."""
    agg = report.Aggregate()
    for p50 in (0.4, 0.9, 0.5):
        agg.add({"requests": 10, "errors": 0, "elapsed_s": 1.0, "p50_ms": p50}, np.empty(0, np.int64), {})
    assert agg.percentile_ms(50) == pytest.approx(0.5)
