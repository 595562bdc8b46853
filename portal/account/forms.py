"""Forms of the account page (flask-wtf, so each carries a CSRF token)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, StringField
from wtforms.validators import DataRequired, Email, Length


class DetailsForm(FlaskForm):
    name = StringField("Full name", validators=[DataRequired("Enter your name."), Length(max=200)])
    email = EmailField("Email address", validators=[DataRequired("Enter your email address."),
                                                    Email("Enter a valid email address."), Length(max=254)])


class MarketingForm(FlaskForm):
    opt_in = BooleanField("Send me news and offers about the portal's products by email")
