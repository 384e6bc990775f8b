"""Vendor client libraries, unchanged, pointed at the sandbox.

- ``simple_salesforce`` builds ``https://`` URLs itself (also for ``nextRecordsUrl``),
  so its emulator is served over TLS (``Sandbox(tls=["salesforce"])``) and the
  library gets a ``requests.Session`` (its documented ``session=`` argument) that
  trusts the sandbox's self-signed certificate. ``trust_env=False`` because an
  exported ``REQUESTS_CA_BUNDLE`` would otherwise override ``session.verify``.
- the ``voucherify`` SDK takes the sandbox URL as ``Configuration(host=...)``.
"""

from __future__ import annotations

import pytest
import requests
import voucherify
from simple_salesforce import Salesforce, SalesforceMalformedRequest
from voucherify.api.customers_api import CustomersApi

from custsync_pipeline.sandbox import CREDENTIALS
from custsync_pipeline.sandbox.generator import GEN_NOW
from custsync_pipeline_tests.sandbox_fixtures import running_sandbox


@pytest.fixture
def sb(monkeypatch: pytest.MonkeyPatch):
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    with running_sandbox(tls=["salesforce"], options={"salesforce": {"page_size": 60}}) as sandbox:
        yield sandbox


def test_simple_salesforce_query_all_and_upsert(sb):
    session = requests.Session()
    session.verify = sb.ca_file
    session.trust_env = False
    sf = Salesforce(
        instance_url=sb.urls["salesforce"],
        session_id=CREDENTIALS["SALESFORCE_ACCESS_TOKEN"],
        session=session,
        version="60.0",
    )
    result = sf.query_all("SELECT Id, Email, LastModifiedDate FROM Contact")
    stored = sb.records("salesforce")
    assert result["totalSize"] == len(stored) > 60  # several pages followed
    assert [r["Id"] for r in result["records"]] == [r["Id"] for r in stored]

    assert (
        sf.Contact.upsert("Custsync_Id__c/G-1", {"FirstName": "Ada", "LastName": "Lovelace"}) == 201
    )
    assert sf.Contact.upsert("Custsync_Id__c/G-1", {"Phone": "+46701234567"}) == 204
    back = sf.Contact.get_by_custom_id("Custsync_Id__c", "G-1")
    assert back["LastName"] == "Lovelace" and back["Phone"] == "+46701234567"
    with pytest.raises(SalesforceMalformedRequest):
        sf.query("SELECT FROM")


def test_voucherify_sdk_lists_and_upserts(sb):
    cfg = voucherify.Configuration(
        host=sb.urls["voucherify"],
        api_key={
            "X-App-Id": CREDENTIALS["VOUCHERIFY_APP_ID"],
            "X-App-Token": CREDENTIALS["VOUCHERIFY_APP_TOKEN"],
        },
    )
    with voucherify.ApiClient(cfg) as client:
        api = CustomersApi(client)
        seen, page = [], 1
        while True:  # the SDK's strict models parse every generated customer, messy ones included
            body = api.list_customers(limit=100, page=page, order="created_at")
            seen += [c.id for c in body.customers]
            if not body.has_more:
                break
            page += 1
        assert sorted(seen) == sorted(r["id"] for r in sb.records("voucherify"))

        created = api.create_customer(
            customers_create_request_body=voucherify.CustomersCreateRequestBody(
                source_id="G-9", name="Ada Lovelace", email="ada@x.se"
            )
        )
        again = api.create_customer(
            customers_create_request_body=voucherify.CustomersCreateRequestBody(
                source_id="G-9", phone="+46701234567"
            )
        )
        assert again.id == created.id and again.name == "Ada Lovelace"
        updated = api.update_customer(
            "G-9", voucherify.CustomersUpdateRequestBody(address={"city": "Lund"})
        )
        assert (
            updated.address.city == "Lund" and api.get_customer(created.id).phone == "+46701234567"
        )
        # incremental pull the SDK way (it sends updated_at[after], a naive UTC time); the
        # generated records end at GEN_NOW, what was just created is newer
        newer = api.list_customers(limit=100, updated_at_after=GEN_NOW.item())
        assert [c.id for c in newer.customers] == [created.id] and newer.total == 1
        with pytest.raises(voucherify.ApiException) as err:
            api.get_customer("no-such-customer")
        assert err.value.status == 404
