"""``custsync run``'s summary: records, rejections, golden records and deltas per target."""

from custsync_pipeline.cli_run import format_summary


def test_summary_separates_rejected_records_from_quarantined_fields() -> None:
    meta = {
        "crm/customers": {"received": 10, "dagster/row_count": 8},
        "crm/rejected_customers": {
            "dagster/row_count": 5,
            "rejected_records": 2,
            "field_issues": 3,
        },
        "golden_customers": {"dagster/row_count": 7, "changed_records": 7},
        "identity_map": {"dagster/row_count": 8},
        "crm/outbound_deltas": {"dagster/row_count": 7, "held_back": 4},
        "crm/published": {"published": 6, "failed_transient": 0, "dead_lettered": 1},
    }
    text = format_summary(meta, ["crm", "shop"], ["crm"])
    crm = next(line for line in text.splitlines() if line.startswith("crm ") and "10" in line)
    assert crm.split() == ["crm", "10", "8", "2", "3"]
    shop = next(line for line in text.splitlines() if line.startswith("shop"))
    assert "FAILED" in shop
    assert "golden records: 7 (7 new or changed this run)" in text
    target = [line for line in text.splitlines() if line.startswith("crm ")][-1]
    assert target.split() == ["crm", "7", "6", "0", "1", "4"]


def test_summary_names_each_failed_step_gate_and_unsent_target_in_one_line() -> None:
    from custsync_pipeline.cli_run import step_owner, unsent_targets

    meta = {
        "crm/customers": {"received": 10, "dagster/row_count": 2, "source_records_replaced": False},
        "web/customers": {
            "received": 10,
            "dagster/row_count": 2,
            "source_records_replaced": False,
            "source_records_kept": 40,
        },
        "crm/published": {"published": 6, "failed_transient": 2, "dead_lettered": 1},
    }
    failures = [("shop__raw_customers", "connector shop at http://x: unreachable, not retrying")]
    text = format_summary(meta, ["crm", "web", "shop"], ["crm"], failures)
    lines = text.splitlines()
    assert "  crm: below its valid-row gate, nothing stored; no earlier good run" in text
    assert "  web: below its valid-row gate, nothing stored; the 40 records" in text
    assert "  shop: shop__raw_customers: connector shop at http://x: unreachable" in lines[-1]
    assert any(line.startswith("  crm: 2 failed") and "1 dead-lettered" in line for line in lines)
    assert unsent_targets(meta, ["crm"]) == {"crm": (2, 1)}
    assert unsent_targets({"crm/published": {"failed_transient": 0}}, ["crm"]) == {}
    assert step_owner("shop_eu__raw_customers", ["shop", "shop_eu"]) == "shop_eu"
    assert step_owner("shop_customers", ["shop", "shop_eu"]) == "shop"
