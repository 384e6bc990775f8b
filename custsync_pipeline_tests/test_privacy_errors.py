"""A target's error message that quotes the record sent (many APIs answer a 400 with the
customer's name and address) reaches no output unmasked: not the run's output, not the
outbox's ``last_error`` (which ``custsync status`` prints), not the Dagster event log.

Over real sockets: Salesforce in the sandbox is the source; a generic REST target (a small
server on 127.0.0.1) refuses every write with such a message.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import yaml

from custsync_pipeline import cli_run
from custsync_pipeline.cli import main
from custsync_pipeline.connectors.http import mask_sent, sent_values
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import write_sync_config


class _Quoting(BaseHTTPRequestHandler):
    """Lists no customers; refuses every write with a 400 quoting the record."""

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._send(200, {"data": [], "links": {"next": None}})

    def _write(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        rec = json.loads(self.rfile.read(n) or b"{}")
        self._send(
            400,
            {
                "message": f"Validation failed for customer {rec.get('first_name')} "
                f"{rec.get('last_name')}: street '{rec.get('street')}' in "
                f"{rec.get('city')} is not accepted"
            },
        )

    do_POST = do_PATCH = do_PUT = _write

    def log_message(self, *args: object) -> None:
        pass


def test_sent_values_are_masked_in_an_error_and_codes_stay():
    body = {"attributes": {"type": "Contact"}, "FirstName": "Åsa", "MailingCountry": "SE",
            "lines": [{"street": "Storgatan 12"}]}  # fmt: skip
    values = sent_values(body)
    assert values == ["Storgatan 12", "Åsa"]  # longest first; no type tag, no code
    text = "Contact Åsa: MailingCountry SE, street 'Storgatan 12' (asa@example.se)"
    assert (
        mask_sent(text, values)
        == "Contact Å***: MailingCountry SE, street 'S***' (a***@example.se)"
    )
    assert mask_sent(None, values) is None
    # the status of a connector's error line stays (it tells a refused credential)
    line = "[voyado] POST https://h/api/v3/contacts -> HTTP 401: Unauthorized for 401"
    assert mask_sent(line, sent_values([{"store_code": "401"}])) == (
        "[voyado] POST https://h/api/v3/contacts -> HTTP 401: Unauthorized for 4***"
    )


def test_an_error_quoting_the_record_is_stored_and_shown_masked(dagster_env, tmp_path, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quoting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    dagster_env.setenv("QUOTING_API_KEY", "k-123456")
    try:
        with Sandbox(seed=5, people=30, base_port=0, systems=["salesforce"]) as sb:
            cfg = write_sync_config(tmp_path / "sync.yaml", sb.urls, db_url, {"salesforce"})
            data = yaml.safe_load(cfg.read_text())
            data["connectors"]["quoting"] = {
                "type": "rest",
                "base_url": f"http://127.0.0.1:{server.server_port}",
                "credentials": {"api_key": "QUOTING_API_KEY"},
                "role": "target",
                "options": {
                    "path": "/api/v1/customers",
                    "records_path": "data",
                    "id_field": "id",
                    "paging": {"type": "next_link", "next_path": "links.next"},
                    "auth": {"type": "api_key", "header": "X-Api-Key"},
                    "write": {"path": "/api/v1/customers", "body": "single", "batch_size": 1},
                    "mapping": {
                        "id": "katana_id",
                        "first_name": "first_name",
                        "last_name": "last_name",
                        "street": "street",
                        "city": "city",
                    },
                },
            }
            data["publish"] = [
                {"connector": "quoting", "fields": ["first_name", "last_name", "street", "city"],
                 "kinds": ["person"]}
            ]  # fmt: skip
            cfg.write_text(yaml.safe_dump(data, sort_keys=False))
            dagster_env.setenv("CUSTSYNC_CONFIG", str(cfg))
            assert cli_run.run(argparse.Namespace(config=None)) == 1
            out = capsys.readouterr().out
            contacts = pd.DataFrame(sb.records("salesforce"))
    finally:
        server.shutdown()
    engine = StateDB(db_url).engine
    box = core.load_outbox(engine, "quoting")
    golden = core.load_golden_records(engine)
    engine.dispose()
    assert len(box) and box["last_error"].notna().all()
    assert box["last_error"].str.contains("Validation failed for customer").all()
    # what was quoted: the names, streets and cities custsync sent
    quoted = {
        v
        for col in ("first_name", "last_name", "street", "city")
        for v in golden[col].dropna().astype(str)
        if len(v) >= 3
    }
    assert quoted and set(contacts["LastName"].dropna()) & quoted
    for text in [*box["last_error"], out]:
        leaked = [v for v in quoted if f" {v}" in text or f"'{v}" in text]
        assert not leaked, (leaked[:3], text[:300])
    # custsync status prints the last error of a golden record's write
    gid = str(box["golden_id"].iloc[0])
    assert main(["status", gid, "--db", db_url]) == 0
    shown = capsys.readouterr().out
    assert "Validation failed" in shown
    assert not [v for v in quoted if f" {v}" in shown or f"'{v}" in shown]
