"""Forms of the school pages: terms, authorise and revoke a connection, authorise and end a product (all carry CSRF)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, RadioField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, InputRequired, Length


class TermsForm(FlaskForm):
    version = HiddenField()
    accept = BooleanField(
        "I accept these terms on behalf of the school",
        validators=[DataRequired("Tick the box to accept the terms.")],
    )


class AuthoriseForm(FlaskForm):
    contact_name = StringField(
        "Name of the school contact",
        validators=[DataRequired("Enter the name of the person the provider should contact."), Length(max=200, message="The name must be 200 characters or fewer.")],
    )
    contact_email = EmailField(
        "Email address of the school contact",
        validators=[
            DataRequired("Enter the contact's email address."),
            Email("Enter an email address in the correct format, like name@school.sch.uk."),
            Length(max=254, message="The email address must be 254 characters or fewer."),
        ],
    )


class RevokeForm(FlaskForm):
    deletion = RadioField(
        "What should happen to the data already held?",
        choices=[
            SelectChoice("keep", "Delete it on the date shown above, following the retention rules"),
            SelectChoice("now", "Delete it at the next daily deletion run"),
        ],
        validators=[InputRequired("Choose what should happen to the data already held.")],
    )
    confirm = BooleanField(
        "I understand that no more data will be extracted through this connection",
        validators=[DataRequired("Tick the box to confirm you want to revoke the connection.")],
    )


class ProductAuthoriseForm(FlaskForm):
    confirm = BooleanField(
        "I authorise this product to read the categories of data listed above for our school",
        validators=[DataRequired("Tick the box to confirm you authorise this product.")],
    )


class ProductEndForm(FlaskForm):
    deletion = RadioField(
        "What should happen to the data only this product needed?",
        choices=[
            SelectChoice("keep", "Keep it and delete it on the date shown above, following the retention rules"),
            SelectChoice("now", "Delete it at the next daily deletion run"),
        ],
        validators=[InputRequired("Choose what should happen to the data only this product needed.")],
    )
    confirm = BooleanField(
        "I understand that this product will no longer get any of our school's data",
        validators=[DataRequired("Tick the box to confirm you want to end this product's authorisation.")],
    )
