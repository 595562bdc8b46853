"""The "My account" page: correct name and email (R49), marketing preference (R52); the email links that need no sign-in."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from portal import audit
from portal.account import email_change, marketing
from portal.account.errors import AccountError
from portal.account.forms import DetailsForm, MarketingForm
from portal.extensions import db, limiter

bp = Blueprint("account", __name__)


def _page(details: DetailsForm | None = None, prefs: MarketingForm | None = None, status: int = 200):
    user = current_user._get_current_object()
    details = details or DetailsForm(name=user.name, email=user.email)
    prefs = prefs or MarketingForm(opt_in=user.marketing_opt_in)
    return render_template("account/account.html", details=details, prefs=prefs,
                           pending=email_change.pending(user)), status


@bp.route("/account")
@login_required
def index():
    return _page()


@bp.route("/account/details", methods=["POST"])
@login_required
# Each new address gets an email from us: a limit keeps the form from being used to send mail in bulk.
@limiter.limit(lambda: current_app.config["EMAIL_CHANGE_RATE_LIMIT"], key_func=lambda: f"email-change:{current_user.id}")
def details():
    """Correct the name at once; a new email address only once confirmed from that address (R49)."""
    user = current_user._get_current_object()
    form = DetailsForm()
    if not form.validate_on_submit():
        return _page(details=form, status=400)
    messages = []
    name = form.name.data.strip()
    if name != user.name:
        user.name = name
        audit.record("account.name_changed", target=user, details={"user_id": user.id})
        messages.append("Your name has been updated.")
    if form.email.data.strip().lower() != user.email.lower():
        try:
            email_change.request_change(user, form.email.data)
        except AccountError as exc:
            db.session.rollback()
            form.email.errors.append(str(exc))
            return _page(details=form, status=400)
        messages.append("We have sent a link to the new address. Your current address stays in use until you "
                        "follow it.")
    db.session.commit()
    flash(" ".join(messages) or "Nothing has changed.")
    return redirect(url_for("account.index"))


@bp.route("/account/email/<token>")
def confirm_email(token: str):
    """Apply a confirmed email change; works without sign-in, since following the link proves the address."""
    try:
        email_change.confirm(token)
        db.session.commit()
    except AccountError as exc:
        db.session.rollback()
        return render_template("account/message.html", title="This link cannot be used", message=str(exc)), 400
    return render_template("account/message.html", title="Email address confirmed",
                           message="Your account now uses this email address. Use it when you sign in.")


@bp.route("/account/marketing", methods=["POST"])
@login_required
def marketing_preference():
    """One checkbox both ways: opting in and opting out take the same single step (R52)."""
    user = current_user._get_current_object()
    form = MarketingForm()
    if not form.validate_on_submit():
        return _page(prefs=form, status=400)
    marketing.set_preference(user, bool(form.opt_in.data), via="account")
    db.session.commit()
    flash("You will get marketing emails." if user.marketing_opt_in else "You will get no marketing emails.")
    return redirect(url_for("account.index"))


@bp.route("/marketing/opt-out/<token>", methods=["GET", "POST"])
def marketing_opt_out(token: str):
    """The one-click opt-out link of every marketing email: no sign-in, effective at once (R52).

    POST is the RFC 8058 one-click form mail programs send; it carries no session, so it is exempt from CSRF.
    """
    user = marketing.user_for_token(token)
    if user is None:
        return render_template("account/message.html", title="This link cannot be used",
                               message="The opt-out link is not valid. Sign in and change your preference on "
                                       "your account page."), 400
    marketing.set_preference(user, False, via="email_link")
    db.session.commit()
    if request.method == "POST":
        return "", 204
    return render_template("account/message.html", title="You will get no more marketing emails",
                           message="Your choice took effect at once. Messages about the service itself, such as "
                                   "extract failures or changes to the terms, still reach you.")
