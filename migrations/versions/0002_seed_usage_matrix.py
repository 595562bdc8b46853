"""Seed the usage matrix (version 1) from the seed document: categories, features and grants.

The data is frozen here; a later matrix change is a new revision with a reason and an
effective date (R15), never an edit of this one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MATRIX = {'categories': [{'id': 'student_basic',
                 'name': 'Student information (basic)',
                 'fields': ['name',
                            'gender',
                            'date_of_birth',
                            'upn',
                            'address',
                            'national_curriculum_year',
                            'other_unique_identifiers',
                            'admission_date',
                            'leaving_date'],
                 'special_category': False,
                 'special_category_fields': []},
                {'id': 'student_demographics',
                 'name': 'Student demographics (census)',
                 'fields': ['fsm',
                            'pupil_premium',
                            'sen',
                            'first_language',
                            'eal',
                            'ethnicity',
                            'looked_after_children',
                            'service_children'],
                 'special_category': True,
                 'special_category_fields': ['sen', 'first_language', 'eal', 'ethnicity']},
                {'id': 'student_timetable',
                 'name': 'Student timetable',
                 'fields': ['registration_groups', 'teaching_groups', 'subjects_studied'],
                 'special_category': False,
                 'special_category_fields': []},
                {'id': 'student_assessment',
                 'name': 'Student assessment',
                 'fields': ['statutory_end_of_key_stage_assessment', 'teacher_assessment', 'summative_tests'],
                 'stages': {'statutory_end_of_key_stage_assessment': ['EYFS', 'KS1', 'KS2', 'KS4', 'KS5'],
                            'current_assessment': ['EYFS',
                                                   'KS1',
                                                   'KS2',
                                                   'KS3',
                                                   'GCSE',
                                                   'A-level',
                                                   'standardised tests']},
                 'special_category': False,
                 'special_category_fields': []},
                {'id': 'student_attendance_exclusions',
                 'name': 'Student attendance and exclusions',
                 'fields': ['daily_attendance',
                            'absence_details',
                            'fixed_term_exclusions',
                            'permanent_exclusions'],
                 'special_category': False,
                 'special_category_fields': []},
                {'id': 'staff_basic',
                 'name': 'Staff information (basic)',
                 'fields': ['title', 'name', 'email', 'role', 'currently_employed'],
                 'special_category': False,
                 'special_category_fields': []}],
 'features': [{'id': 'user_provisioning',
               'name': 'User provisioning, login, authentication and personalisation (for example tagging '
                       'teachers to classes/class names/groups of pupils)',
               'categories': ['staff_basic']},
              {'id': 'self_evaluation_early_results',
               'name': 'Self-evaluation analysis of past school performance and early results analysis '
                       'service',
               'categories': ['student_basic',
                              'student_demographics',
                              'student_timetable',
                              'student_assessment',
                              'student_attendance_exclusions']},
              {'id': 'estimates_targets_student_explorer',
               'name': 'FFT benchmark estimates, target setting and student explorer (current students)',
               'categories': ['student_basic',
                              'student_demographics',
                              'student_timetable',
                              'student_assessment',
                              'student_attendance_exclusions']},
              {'id': 'pupil_tracking',
               'name': 'Pupil tracking and analysis of assessment data for current students',
               'categories': ['student_basic',
                              'student_demographics',
                              'student_timetable',
                              'student_assessment',
                              'student_attendance_exclusions']},
              {'id': 'attendance_reporting',
               'name': 'Student attendance reporting and analysis (launching in December 2020)',
               'categories': ['student_basic', 'student_demographics', 'student_attendance_exclusions']}],
 'source': '002_2195aba83f61f247.txt'}

categories = sa.table(
    "categories",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("fields", sa.JSON),
    sa.column("special_category", sa.Boolean),
    sa.column("special_category_fields", sa.JSON),
)
features = sa.table("features", sa.column("id", sa.String), sa.column("name", sa.Text))
grants = sa.table(
    "feature_grants",
    sa.column("feature_id", sa.String),
    sa.column("category_id", sa.String),
    sa.column("matrix_version", sa.Integer),
    sa.column("effective_from", sa.Date),
    sa.column("reason", sa.Text),
)
matrix_info = sa.table(
    "matrix_info", sa.column("version", sa.Integer), sa.column("source", sa.String), sa.column("notes", sa.JSON)
)


def upgrade():
    op.bulk_insert(
        categories,
        [
            {
                "id": c["id"],
                "name": c["name"],
                "fields": c["fields"],
                "special_category": c["special_category"],
                "special_category_fields": c["special_category_fields"],
            }
            for c in MATRIX["categories"]
        ],
    )
    op.bulk_insert(features, [{"id": f["id"], "name": f["name"]} for f in MATRIX["features"]])
    op.bulk_insert(
        grants,
        [
            {
                "feature_id": f["id"],
                "category_id": cat,
                "matrix_version": 1,
                "effective_from": datetime.date(2020, 9, 1),
                "reason": "Seed document: School MIS data used in FFT products",
            }
            for f in MATRIX["features"]
            for cat in f["categories"]
        ],
    )
    op.bulk_insert(matrix_info, [{"version": 1, "source": MATRIX["source"], "notes": {"stages": MATRIX["categories"][3].get("stages", {})}}])


def downgrade():
    op.execute(grants.delete())
    op.execute(features.delete())
    op.execute(categories.delete())
    op.execute(matrix_info.delete())
