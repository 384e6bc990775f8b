"""``custsync sandbox`` / ``python -m custsync_pipeline.sandbox`` serve until SIGTERM and say where each API is."""

from __future__ import annotations

import requests

from custsync_pipeline.cli import build_parser
from custsync_pipeline.sandbox.cli import faults_from_args
from custsync_pipeline_tests.sandbox_fixtures import VF_HEADERS, sandbox_process


def test_sandbox_subcommand_is_registered():
    args = build_parser().parse_args(
        [
            "sandbox",
            "--base-port",
            "0",
            "--people",
            "20",
            "--fault-rate",
            "0.2",
            "--malformed-pages",
            "1",
        ]
    )
    assert args.command == "sandbox" and args.base_port == 0 and args.fault_rate == 0.2
    assert faults_from_args(args) == {
        "rate_429": 0.1,
        "rate_5xx": 0.1,
        "slow_rate": 0.0,
        "slow_seconds": 0.0,
        "retry_after": 1.0,
        "malformed_pages": 1,
    }


def test_module_serves_until_sigterm(tmp_path):
    with sandbox_process("--people", "40") as (urls, lines, after):
        assert set(urls) >= {"salesforce", "voucherify"}
        assert any(urls["salesforce"] in line for line in lines)  # stdout says where each API is
        resp = requests.get(f"{urls['voucherify']}/v1/customers", headers=VF_HEADERS, timeout=10)
        assert resp.status_code == 200 and resp.json()["total"] > 0
    assert any("stopped" in line for line in after)
