"""Retention rules as data: the seeded defaults, their deadline arithmetic and the check on deployment edits."""
from __future__ import annotations

from datetime import date, timedelta

from portal.models.retention import PeriodUnit, RetentionRule
from portal.retention.calendar import BankHolidays, add_months, add_working_days, add_years

__all__ = ["CLOCKS", "COVERS", "SEED_RULES", "TIMINGS", "deadline_for", "rule_problem"]

# What a rule can cover, and the events that can start its clock; the sweep implements each pair.
COVERS = {
    "government": "DfE pupil data (data type government)",
    "pupil": "school pupil data (a pupil and every row about them)",
    "staff": "basic staff records never provisioned as users",
    "school": "all of a school's MIS data",
    "connection": "the data obtained through one connection",
    "row": "single MIS rows",
    "operational": "the portal's own run logs",
    "user": "a portal user's data held for one membership (and the login once no membership is left)",
}
CLOCKS = {
    "date_of_birth": "the pupil's date of birth",
    "dfe_agreement_end": "the end of the operator's DfE data agreement",
    "left": "the MIS leaving date once passed, or the first full extract that no longer returns the pupil",
    "key_stage_completed": "31 August of the year the pupil is in the school's last year group",
    "subscription_end": "the end of the school's last subscription",
    "connection_revoked": "the day the connection was revoked (cancelled when re-authorised)",
    "staff_left": "the first extract that shows the staff member not employed or no longer returns them",
    "tombstoned": "the extract that found the row deleted upstream",
    "deletion_order": "the day the school asked for deletion (revocation or a removed grant)",
    "run_finished": "the end of a job run",
    "user_removed": "the day the organisation's admin deleted the user from the organisation",
}
TIMINGS = {
    "backup": "the backup window B before the deadline, so no backup outlives it (R35)",
    "asap": "the first sweep after the clock starts, and in any case by the deadline (R28)",
    "deadline": "on the deadline itself (for grace periods that must run in full)",
}

# The defaults from the seeds (privacy-rules.md group D). Shipped by migrations 0003 and 0004; this tuple
# is the single copy the migration and the tests read.
SEED_RULES: tuple[dict, ...] = (
    dict(id="R27", title="DfE pupil data: the pupil's 23rd birthday", covers="government", clock="date_of_birth",
         period=23, period_unit="years", max_period=23, timing="backup",
         source="000: When such a pupil is 23 years old."),
    dict(id="R28", title="DfE pupil data: within 20 working days of the DfE agreement ending", covers="government",
         clock="dfe_agreement_end", period=20, period_unit="working_days", max_period=20, timing="asap",
         source="000: In full, within 20 working days of termination of our contract with the Department For Education."),
    dict(id="R29", title="School pupil data: 6 months after the pupil left", covers="pupil", clock="left",
         period=6, period_unit="months", max_period=6, timing="backup",
         source="000: no longer than 6 months after either: ... the school informs FFT that the pupil has left."),
    dict(id="R30", title="School pupil data: 6 months after completing the school's highest key stage", covers="pupil",
         clock="key_stage_completed", period=6, period_unit="months", max_period=6, timing="backup",
         source="000: the pupil completes the highest national curriculum key stage for the school."),
    dict(id="R31", title="School data: 6 months after the school's subscription ends", covers="school",
         clock="subscription_end", period=6, period_unit="months", max_period=6, timing="backup",
         source="000: the school's Aspire subscription comes to an end."),
    dict(id="R31-grant", title="Categories no granted feature needs any more: 6 months after the grant ended",
         covers="connection", clock="deletion_order", period=6, period_unit="months", max_period=6, timing="backup",
         source="000: the school's Aspire subscription comes to an end."),
    dict(id="R32", title="Connection data: 6 months after a revocation that is not undone", covers="connection",
         clock="connection_revoked", period=6, period_unit="months", max_period=6, timing="backup",
         source="002: schools can authorise or revoke (switch off) the MIS connection at any time"),
    dict(id="R32-now", title="Connection data: deleted at once at the school's request on revocation",
         covers="connection", clock="deletion_order", period=1, period_unit="days", max_period=1, timing="asap",
         source="002: schools can authorise or revoke (switch off) the MIS connection at any time"),
    dict(id="R39", title="Staff never provisioned as users: 6 months after the MIS stops showing them employed",
         covers="staff", clock="staff_left", period=6, period_unit="months", max_period=6, timing="backup",
         source="002: whether staff are currently employed in the school"),
    dict(id="R37", title="User data: 7 years after the subscription ends", covers="user", clock="subscription_end",
         period=7, period_unit="years", max_period=7, timing="backup",
         source="000: 7 years after termination or expiry of the relevant Aspire subscription."),
    dict(id="R38", title="User data: 7 years after the organisation deletes the user", covers="user",
         clock="user_removed", period=7, period_unit="years", max_period=7, timing="backup",
         source="000: 7 years after the subscribing organisation has deleted the relevant user from Aspire."),
    dict(id="TOMB", title="Rows deleted upstream: removed 7 days later", covers="row", clock="tombstoned",
         period=7, period_unit="days", max_period=7, timing="deadline",
         source="Seeds silent: the school (controller) deleted the row; the tombstone stays 7 days so products "
                "reading the feed see it and delete their copies (R42's acknowledgement window)."),
    dict(id="OPS-RUNS", title="Run logs: 24 months after the run finished", covers="operational", clock="run_finished",
         period=24, period_unit="months", max_period=None, timing="backup",
         source="Operator data. Audit entries are kept for the life of the deployment (hash chain; ids only)."),
)


def deadline_for(rule: RetentionRule, trigger: date, bank_holidays: BankHolidays) -> date:
    """Return the rule's deadline for a clock that started on the trigger date (R25, R26)."""
    unit = PeriodUnit(rule.period_unit)
    if unit is PeriodUnit.years:
        return add_years(trigger, rule.period)
    if unit is PeriodUnit.months:
        return add_months(trigger, rule.period)
    if unit is PeriodUnit.working_days:
        return add_working_days(trigger, rule.period, bank_holidays)
    return trigger + timedelta(days=rule.period)


def rule_problem(rule: RetentionRule) -> str | None:
    """Return what is wrong with a rule edited by a deployment, or None when it may be saved."""
    if rule.covers not in COVERS:
        return f"'{rule.covers}' is not something a rule can cover; choose one of: {', '.join(COVERS)}."
    if rule.clock not in CLOCKS:
        return f"'{rule.clock}' is not a clock the sweep knows; choose one of: {', '.join(CLOCKS)}."
    if rule.timing not in TIMINGS:
        return f"'{rule.timing}' is not a timing; choose one of: {', '.join(TIMINGS)}."
    if rule.period is None or rule.period < 0:
        return "The period must be zero or more."
    if rule.max_period is not None and rule.period > rule.max_period:
        unit = PeriodUnit(rule.period_unit).value.replace("_", " ")
        return (
            f"The period cannot be longer than {rule.max_period} {unit}: that is the deadline the seeds promise "
            "schools. A shorter period is allowed."
        )
    return None
