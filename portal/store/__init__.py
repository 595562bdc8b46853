"""The MIS store's one door: every write, read and delete of pupil and staff data goes through this package.

One module per job: ``write`` (extract batches), ``removals`` (staged, then applied), ``feed``
(product API reads), ``retention`` (retention deletes), ``counts`` (school pages), ``subjects``
(data-subject requests), ``notices`` (deletion notices), ``people`` (the roll, staff leavers);
``walk`` finds a subject's rows by foreign keys; ``tables`` holds what the writers share.
Every public function that reads or changes records writes one audit entry with ids and counts only.
"""
from portal.store.counts import category_counts
from portal.store.feed import API_ENVELOPE_COLUMNS, FeedPage, api_field_columns, api_record_types, json_value, read_feed
from portal.store.notices import deletion_notice_pupils
from portal.store.people import roll_for_viewer, staff_matching_emails, staff_no_longer_current
from portal.store.removals import (
    apply_removals, carry_removals, discard_removals, live_pupil_count, pending_pupil_removals, stage_reconciliation,
)
from portal.store.retention import (
    attendance_cells, clear_fields, clearable_fields, delete_pupils, delete_rows, erase_subject_exports, pupil_row_counts,
)
from portal.store.subjects import (
    dsr_count_rows, dsr_erase, dsr_portal_rows, dsr_recipients, dsr_search_pupils, dsr_subject_rows,
)
from portal.store.tables import KIND_CATEGORY, PUPIL_KINDS, content_hash, hash_key, special_columns
from portal.store.walk import DSR_SUBJECT_TABLES, child_tables, linked_tables, subject_ids
from portal.store.write import COUNT_KEYS, Batch, Writer, record_year_groups, withhold_objections

__all__ = [
    "API_ENVELOPE_COLUMNS",
    "COUNT_KEYS",
    "Batch",
    "DSR_SUBJECT_TABLES",
    "FeedPage",
    "KIND_CATEGORY",
    "PUPIL_KINDS",
    "Writer",
    "api_field_columns",
    "api_record_types",
    "apply_removals",
    "attendance_cells",
    "carry_removals",
    "category_counts",
    "child_tables",
    "clear_fields",
    "clearable_fields",
    "content_hash",
    "delete_pupils",
    "delete_rows",
    "deletion_notice_pupils",
    "discard_removals",
    "dsr_count_rows",
    "dsr_erase",
    "dsr_portal_rows",
    "dsr_recipients",
    "dsr_search_pupils",
    "dsr_subject_rows",
    "erase_subject_exports",
    "hash_key",
    "json_value",
    "linked_tables",
    "live_pupil_count",
    "pending_pupil_removals",
    "pupil_row_counts",
    "read_feed",
    "record_year_groups",
    "roll_for_viewer",
    "special_columns",
    "staff_matching_emails",
    "staff_no_longer_current",
    "stage_reconciliation",
    "subject_ids",
    "withhold_objections",
]
