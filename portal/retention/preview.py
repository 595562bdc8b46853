"""The dry run: what the sweep would delete on each day of a window, by school, rule and category, with counts (R41)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta

from portal import store
from portal.retention import fields
from portal.retention.deadlines import RetentionContext
from portal.retention.rules import deadline_for
from portal.retention.plan import BATCH, Item, iter_due

__all__ = ["PreviewLine", "preview"]


@dataclass
class PreviewLine:
    """Rows one rule will delete in one category of one school on one sweep date (or keeps under a legal hold)."""

    school_id: int | None
    rule_id: str
    category: str
    due_on: date
    trigger_on: date
    deadline: date
    count: int
    records: int
    held: bool = False
    # A withdrawn field set: the columns cleared (in plain words) on ``count`` rows that stay.
    fields: str = ""

    @property
    def late_days(self) -> int:
        return max(0, (self.due_on - self.deadline).days)


def preview(as_of: date, days: int = 30, *, school_id: int | None = None) -> list[PreviewLine]:
    """Return what sweeps from as_of to as_of + days would delete if nothing changes; overdue records show on as_of.

    Counts are the rows the sweep deletes: a pupil counts once in student_basic and once for each
    row about them in its category, exactly as the deletion proof will. A withdrawn field set's line
    counts the rows whose columns it clears (they stay).
    """
    horizon = as_of + timedelta(days=days)
    ctx = RetentionContext.load(as_of)
    lines: dict[tuple, PreviewLine] = {}
    pupils: list[Item] = []

    def add(item: Item, counts: Counter) -> None:
        held = item.held and item.due.due_on > horizon
        due_on = max(item.due.due_on, as_of)
        for category, n in counts.items():
            key = (item.school_id, item.due.rule_id, category, None if held else due_on, held)
            line = lines.get(key)
            if line is None:
                line = lines[key] = PreviewLine(item.school_id, item.due.rule_id, category, due_on,
                                                item.due.trigger_on, item.due.deadline, 0, 0, held)
            line.trigger_on = min(line.trigger_on, item.due.trigger_on)
            line.deadline = min(line.deadline, item.due.deadline)
            line.count += n
            if category == item.category:
                line.records += 1

    def flush() -> None:
        counts = store.pupil_row_counts([p.id for p in pupils])
        for p in pupils:
            add(p, counts.get(p.id, Counter()))
        pupils.clear()

    for item in iter_due(ctx, horizon, include_held=True, school_id=school_id):
        if item.table == "mis_pupils":
            pupils.append(item)
            if len(pupils) >= BATCH:
                flush()
        else:
            add(item, Counter({item.category: 1}))
    flush()
    for order, table, _ in fields.each_target(fields.due_orders(horizon, school_id=school_id)):
        key = ("fields", order.id)
        line = lines.get(key)
        if line is None:
            rule = ctx.rules_by_id[order.rule_id]
            line = lines[key] = PreviewLine(order.school_id, order.rule_id, order.categories[0], max(order.due_on, as_of),
                                            order.trigger_on, deadline_for(rule, order.trigger_on, ctx.bank_holidays),
                                            0, 0, fields=fields.label(order.fields))
        n = fields.row_count(table, order)
        line.count += n
        line.records += n
    return sorted(lines.values(), key=lambda l: (l.held, l.due_on, l.school_id or 0, l.rule_id, l.category))
