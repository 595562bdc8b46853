"""Forms of the oversight pages (all carry CSRF), and the one way they are submitted."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask_wtf import FlaskForm
from wtforms import BooleanField, DateTimeLocalField, EmailField, IntegerField, RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from portal.extensions import db
from portal.oversight.grants import MAX_HOURS


@dataclass(frozen=True)
class Submission:
    """What became of a form: ``done`` (committed, with the domain function's ``result``) or an ``error`` to show."""

    done: bool = False
    result: Any = None
    error: str | None = None
    invalid: bool = False

    @property
    def status(self) -> int:
        """The HTTP status of the page shown again: 400 when the form or the domain refused it."""
        return 400 if self.invalid or self.error else 200


def submit(form: FlaskForm, action: Callable[[], Any], refusal: type[Exception]) -> Submission:
    """Validate the form, then call the domain function: commit on success; on its refusal roll back and say why."""
    if not form.validate_on_submit():
        return Submission(invalid=bool(form.errors))
    try:
        result = action()
    except refusal as exc:
        db.session.rollback()
        return Submission(error=str(exc))
    db.session.commit()
    return Submission(done=True, result=result)


class GrantForm(FlaskForm):
    email = EmailField("Support staff email address", validators=[DataRequired("Enter the support staff member's email address.")])
    hours = IntegerField("For how many hours", default=4, validators=[
        InputRequired("Enter for how many hours (1 to 24)."),
        NumberRange(1, MAX_HOURS, f"Support access lasts between 1 and {MAX_HOURS} hours.")])
    ticket_ref = StringField("Support ticket reference", validators=[
        DataRequired("Enter the support ticket reference."), Length(max=60, message="The reference must be 60 characters or fewer.")])
    reason = TextAreaField("Why support staff need to see pupil data", validators=[
        DataRequired("Enter the reason support staff need to see pupil data."),
        Length(max=500, message="The reason must be 500 characters or fewer.")])


class EndForm(FlaskForm):
    """A confirm-only form: ends a grant or a link."""


class LinkForm(FlaskForm):
    organisation_id = SelectField("Organisation", coerce=int, validators=[InputRequired("Choose the organisation.")])
    feature_id = SelectField("Feature it may use", validators=[InputRequired("Choose the feature.")])
    agreement_ref = StringField("Service agreement reference", validators=[
        DataRequired("Enter the reference of the service agreement with this organisation."),
        Length(max=100, message="The reference must be 100 characters or fewer.")])


class SubProcessorForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Enter the sub-processor's name."), Length(max=200)])
    purpose = StringField("Purpose", validators=[DataRequired("Enter what it does for the portal."), Length(max=300)])
    location = StringField("Country (two-letter code, GB for the UK)", validators=[DataRequired("Enter the country code."), Length(max=2)])
    data_types = StringField("Personal data it receives", validators=[DataRequired("Enter the personal data types."), Length(max=300)])
    mechanism = SelectField("UK transfer mechanism", validators=[Optional()], choices=[
        ("", "None (processed in the UK)"), ("uk_adequacy", "UK adequacy regulations"), ("uk_idta", "UK IDTA"),
        ("uk_addendum", "UK Addendum"), ("uk_us_data_bridge", "UK–US data bridge"), ("privacy_shield", "Privacy Shield")])
    pupil_data = BooleanField("It receives pupil data")


class BreachForm(FlaskForm):
    aware_at = DateTimeLocalField("When the operator became aware (UK time)", format="%Y-%m-%dT%H:%M",
                                  validators=[InputRequired("Enter the date and time of awareness.")])
    summary = TextAreaField("What happened (no personal data)", validators=[
        DataRequired("Describe the breach."), Length(max=1000)])
    product_id = SelectField("Product whose credential or access is involved", coerce=int, validators=[Optional()])
    credential_id = IntegerField("Credential id (if one credential leaked)", validators=[Optional()])
    confirmed = BooleanField("The breach is confirmed (not only suspected)")


class NoticeForm(FlaskForm):
    recipient = RadioField("Who was notified", choices=[("school", "An affected school (emails its admins)"),
                                                       ("ico", "The ICO"), ("individuals", "Individuals")],
                           validators=[InputRequired("Choose who was notified.")])
    school_id = SelectField("School", coerce=int, validators=[Optional()])
    reference = StringField("Reference (ICO case number, or how individuals were told)", validators=[Length(max=200)])
