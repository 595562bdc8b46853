"""Forms of the school's request pages: intake and subject search."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from portal.date_input import DateInputField
from portal.models.dsr import RequestType
from portal.privacy.register import CHANNELS, REQUESTER_KINDS, TYPE_LABELS


class IntakeForm(FlaskForm):
    request_type = RadioField("Type of request", choices=[(t.value, TYPE_LABELS[t.value]) for t in RequestType],
                              validators=[DataRequired("Choose the type of request.")])
    received_on = DateInputField("Date received", validators=[DataRequired("Enter the date the request was received.")])
    channel = SelectField("How it was received", choices=[("", "Choose")] + list(CHANNELS.items()),
                          validators=[DataRequired("Choose how the request was received.")])
    requester_kind = SelectField("Who is asking", choices=[("", "Choose")] + list(REQUESTER_KINDS.items()),
                                 validators=[DataRequired("Choose who is asking.")])
    relationship = StringField("Relationship to the pupil", validators=[Optional(), Length(max=60)])
    requester_contact = TextAreaField("Requester's name and contact details", validators=[Optional(), Length(max=2000)])
    subject_external_id = StringField("Pupil's MIS id", validators=[DataRequired("Find and choose the pupil.")])
    details = TextAreaField("Details of the request", validators=[Optional(), Length(max=4000)])


class SearchForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search that changes nothing

    external_id = StringField("MIS id", validators=[Optional()])
    upn = StringField("UPN", validators=[Optional()])
    surname = StringField("Surname", validators=[Optional()])
    date_of_birth = DateInputField("Date of birth", validators=[Optional()])
