"""R74 over a real provider sandbox: after a pupil's written objection, special-category fields are withheld and no longer stored."""
from __future__ import annotations

import pytest
from sqlalchemy import select, text

from portal.api import authorisations
from portal.extensions import db
from portal.extract import run_extract
from portal.models import FlagKind, RunStatus, SubjectFlag, SubjectKind
from portal.models.mis import MisDemographics
from portal.sandbox import synthetic
from tests import api_support as s

FEATURE = "self_evaluation_early_results"
SPECIAL = ("sen_status", "sen_need", "first_language", "eal", "ethnicity")


@pytest.fixture
def school_on_provider(serve_school):
    """A school on an installed connector's sandbox, authorising a product with the self-evaluation feature."""
    school = synthetic.generate_school(31, pupils=24, days=3, phase="secondary", sixth_form=False)
    with serve_school(school, SPECIAL_CATEGORY_POLICY_DOCUMENT="DPA-APD-2025-03") as served:
        product = s.product(FEATURE)
        authorisations.authorise_product(served.org, product, None)
        yield served.app, served.org, served.connection_id, s.token_for(product)


def _raw_special(external_id: str) -> tuple:
    """The special-category columns as stored (ciphertext or NULL), read past the model."""
    return tuple(db.session.execute(
        text(f"SELECT {', '.join(SPECIAL)} FROM mis_demographics WHERE external_id = :e"), {"e": external_id}).one())


def _named(external_id: str) -> bool:
    """Whether the pupil's ethnicity, first language and SEN status are stored (as ciphertext)."""
    stored = dict(zip(SPECIAL, _raw_special(external_id)))
    return all(stored[f] for f in ("ethnicity", "first_language", "sen_status"))


def test_r74_a_written_objection_withholds_the_fields_and_later_extracts_store_nulls(school_on_provider):
    app, org, connection_id, token = school_on_provider
    full = run_extract(connection_id, mode="full")
    assert full.status == RunStatus.succeeded, full.error_message
    rows = db.session.execute(select(MisDemographics).where(MisDemographics.connection_id == connection_id)).scalars()
    with_values = [r.external_id for r in rows if r.ethnicity and r.first_language and r.sen_status]
    pupil, other = with_values[:2]
    assert _named(pupil) and _named(other)

    # The school records P's written notice.
    db.session.add(SubjectFlag(school_id=org.id, subject_kind=SubjectKind.pupil, external_id=pupil,
                               kind=FlagKind.special_category_objection, reason_code="written_notice"))
    db.session.commit()

    # The next response withholds P's ethnicity, language and SEN; the other pupil's are served.
    client = app.test_client()
    path = s.records_path(FEATURE, org.id, "student_demographics", "demographics")
    by_id = {r["external_id"]: r for r in s.get(client, token, path, limit=1000).json["records"]}
    assert by_id[pupil]["withheld"] == "objection"
    assert [by_id[pupil]["fields"][f] for f in SPECIAL] == [None] * 5
    assert by_id[other]["withheld"] is None and by_id[other]["fields"]["ethnicity"]

    # The next extract (incremental: the provider sends nothing new about P) stores nulls for P.
    incremental = run_extract(connection_id)
    assert incremental.params["mode"] == "incremental" and incremental.status == RunStatus.succeeded
    assert _raw_special(pupil) == (None,) * 5
    assert _named(other)
    assert incremental.stats["categories"]["student_demographics"]["updated"] == 1

    # A full extract brings P's values from the provider again: they are not stored, and nothing counts as changed.
    again = run_extract(connection_id, mode="full")
    assert again.status == RunStatus.succeeded, again.error_message
    assert _raw_special(pupil) == (None,) * 5
    assert _named(other)
    counts = again.stats["categories"]["student_demographics"]
    assert (counts["inserted"], counts["updated"], counts["unchanged"]) == (0, 0, len(by_id))


def test_r74_an_objection_on_file_before_the_first_extract_means_nothing_special_is_ever_stored(school_on_provider):
    app, org, connection_id, token = school_on_provider
    sandbox_pupils = run_extract(connection_id, mode="full", categories=["student_basic"])
    assert sandbox_pupils.status == RunStatus.succeeded
    pupil = db.session.execute(text("SELECT external_id FROM mis_pupils ORDER BY id LIMIT 1")).scalar()
    db.session.add(SubjectFlag(school_id=org.id, subject_kind=SubjectKind.pupil, external_id=pupil,
                               kind=FlagKind.special_category_objection))
    db.session.commit()
    run = run_extract(connection_id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    assert _raw_special(pupil) == (None,) * 5
    stored = db.session.execute(select(MisDemographics).where(MisDemographics.connection_id == connection_id)).scalars()
    assert sum(1 for r in stored if r.ethnicity) > 0  # the others' values are stored
