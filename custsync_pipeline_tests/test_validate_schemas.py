"""The Pandera models: every vendor payload model accepts what the sandbox serves, the aspect
models accept good long tables and name what is wrong in bad ones."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest

from custsync_pipeline.domain.schemas import (
    ASPECT_SCHEMAS,
    PAYLOAD_SCHEMAS,
    canonical_schema,
    required_payload_columns,
)
from custsync_pipeline.sandbox import generate

FRAME_TO_MODEL = {
    "salesforce": "salesforce.Contact",
    "salesforce.Account": "salesforce.Account",
    "salesforce.Lead": "salesforce.Lead",
    "voucherify": "voucherify",
    "voyado": "voyado",
    "exact": "exact.Account",
    "exact.Contact": "exact.Contact",
    "icomm": "icomm",
}


@pytest.fixture(scope="module")
def data():  # noqa: ANN201
    return generate(seed=3, people=400)


@pytest.mark.parametrize(("frame", "model"), list(FRAME_TO_MODEL.items()))
def test_payload_models_describe_the_wire_format(data, frame: str, model: str) -> None:  # noqa: ANN001
    wire = data.frames[frame]
    assert len(wire) > 0
    PAYLOAD_SCHEMAS[model].validate(wire, lazy=True)  # coerced explicitly; raises on any failure


def test_payload_models_catch_bad_ids_and_missing_columns(data) -> None:  # noqa: ANN001
    wire = data.frames["voyado"].head(5).copy()
    wire.loc[wire.index[0], "id"] = "12345"
    with pytest.raises(pa.errors.SchemaErrors) as info:
        PAYLOAD_SCHEMAS["voyado"].validate(wire, lazy=True)
    assert set(info.value.failure_cases["check"]) == {"voyado_id"}
    with pytest.raises(pa.errors.SchemaErrors, match="email"):
        PAYLOAD_SCHEMAS["voyado"].validate(wire.drop(columns=["email"]), lazy=True)
    assert required_payload_columns("salesforce", ["Contact", "Account"]) == (
        "Id",
        "LastModifiedDate",
        "Name",
        "Email",
    )


def test_aspect_models() -> None:
    good = pd.DataFrame(
        {
            "connector": ["katana", "katana"],
            "source_id": ["1", "1"],
            "entry_key": ["k1", "k2"],
            "type": ["billing", "shipping"],
            "street": ["Storgatan 1", None],
            "postal_code": ["111 22", None],
            "city": ["Stockholm", "Malmö"],
            "country": ["SE", "SE"],
        }
    )
    ASPECT_SCHEMAS["addresses"].validate(good, lazy=True)
    bad = good.assign(entry_key=["k1", "k1"], country=["SE", "Sweden"])
    with pytest.raises(pa.errors.SchemaErrors) as info:
        ASPECT_SCHEMAS["addresses"].validate(bad, lazy=True)
    checks = set(info.value.failure_cases["check"].astype(str))
    assert "iso_country" in checks and any(
        "unique" in c or "duplicate" in c.lower() for c in checks
    )

    contacts = pd.DataFrame(
        {
            "connector": ["x"],
            "source_id": ["1"],
            "entry_key": ["e1"],
            "type": ["email"],
            "value": ["a@x.se"],
        }
    )
    ASPECT_SCHEMAS["customer_contact_details"].validate(contacts, lazy=True)
    with pytest.raises(pa.errors.SchemaErrors):
        ASPECT_SCHEMAS["customer_contact_details"].validate(
            contacts.assign(type=["pigeon"]), lazy=True
        )
    assert set(ASPECT_SCHEMAS) >= {
        "addresses",
        "contact_persons",
        "customer_attributes",
        "address_attributes",
        "contact_person_attributes",
        "customer_contact_details",
        "address_contact_details",
        "contact_person_contact_details",
        "attachments",
    }


def test_canonical_model_names_every_canonical_column() -> None:
    from custsync_pipeline.domain.canonical import VALIDATED_COLUMNS

    assert list(canonical_schema().columns) == list(VALIDATED_COLUMNS)
