"""Sign-in, second-factor and password-reset forms (flask-wtf, so every one carries a CSRF token)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length, Regexp, ValidationError

from portal.auth.passwords import policy_problem


class LoginForm(FlaskForm):
    email = EmailField("Email address", validators=[DataRequired("Enter your email address."), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired("Enter your password."), Length(max=1024)])


class TotpForm(FlaskForm):
    code = StringField(
        "6-digit code from your authenticator app",
        validators=[
            DataRequired("Enter the 6-digit code."),
            Regexp(r"^\s*\d{6}\s*$", message="The code is 6 digits, like 123456."),
        ],
    )


class RecoveryCodeForm(FlaskForm):
    code = StringField(
        "Recovery code",
        validators=[
            DataRequired("Enter one of your recovery codes."),
            Length(max=40),
            Regexp(r"^[\sA-Za-z0-9-]+$", message="A recovery code is letters and numbers, like abcde-23456."),
        ],
    )


class ResetRequestForm(FlaskForm):
    email = EmailField(
        "Email address",
        validators=[DataRequired("Enter your email address."), Email("Enter a valid email address."), Length(max=254)],
    )


class NewPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired("Enter a new password."), Length(max=1024)])
    confirm = PasswordField(
        "Confirm new password",
        validators=[DataRequired("Enter the new password again."), EqualTo("password", "The passwords do not match.")],
    )

    def validate_password(self, field):
        problem = policy_problem(field.data or "")
        if problem:
            raise ValidationError(problem)
