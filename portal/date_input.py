"""The GOV.UK date input: a date typed as day, month and year boxes (not the browser's own date picker)."""
from __future__ import annotations

from datetime import date

from werkzeug.datastructures import MultiDict
from wtforms import Field
from wtforms.validators import StopValidation
from wtforms.utils import unset_value

PARTS = ("day", "month", "year")


def parse_parts(label: str, day: str, month: str, year: str) -> date | None:
    """Return the date the three boxes give, None when all are empty; raise ValueError with the problem in words."""
    values = {"day": day.strip(), "month": month.strip(), "year": year.strip()}
    if not any(values.values()):
        return None
    missing = [p for p in PARTS if not values[p]]
    if missing:
        raise ValueError(f"{label} must include a {' and a '.join(missing)}")
    if not all(v.isdigit() for v in values.values()) or len(values["year"]) != 4:
        raise ValueError(f"{label} must be a real date, like 27 3 2026")
    try:
        return date(int(values["year"]), int(values["month"]), int(values["day"]))
    except ValueError:
        raise ValueError(f"{label} must be a real date, like 27 3 2026") from None


def date_from_form(form: MultiDict, name: str, label: str) -> date | None:
    """Read a date input's boxes (``name-day`` …) from posted form data; an ISO value under ``name`` also works."""
    if form.get(name):
        try:
            return date.fromisoformat(form[name].strip())
        except ValueError:
            raise ValueError(f"{label} must be a real date, like 27 3 2026") from None
    return parse_parts(label, *(form.get(f"{name}-{p}", "") for p in PARTS))


class DateInputField(Field):
    """A WTForms date field rendered as the GOV.UK date input (``{{ date_input(form.x) }}`` in _macros.html)."""

    def process(self, formdata, data=unset_value, extra_filters=None):
        self.process_errors = []
        if data is unset_value:
            data = self.default() if callable(self.default) else self.default
        self.object_data = self.data = data
        self.raw_data = None
        self.parts = {p: "" for p in PARTS}
        if isinstance(data, date):
            self.parts = {"day": str(data.day), "month": str(data.month), "year": str(data.year)}
        if formdata is None or not any(k in formdata for k in (self.name, *(f"{self.name}-{p}" for p in PARTS))):
            return
        self.parts = {p: formdata.get(f"{self.name}-{p}", "") for p in PARTS}
        typed = formdata.get(self.name) or "-".join(v.strip() for v in self.parts.values() if v.strip())
        self.raw_data = [typed]  # non-empty as soon as any box is filled, so Optional() lets errors through
        self.data = None
        try:
            self.data = date_from_form(formdata, self.name, self.label.text)
        except ValueError as exc:
            self.process_errors.append(str(exc))

    def pre_validate(self, form) -> None:
        # A half-typed date keeps its own message ("must include a month") instead of DataRequired's.
        if self.process_errors:
            raise StopValidation()

    def _value(self) -> str:
        return self.data.isoformat() if isinstance(self.data, date) else ""
