"""Sign-in with a rate limit and an optional (for support staff, required) TOTP step; logout; password reset."""
from __future__ import annotations

import hashlib
import secrets
import time
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import func, select, update

from portal import audit, mail, scope
from portal.auth import recovery
from portal.auth.forms import LoginForm, NewPasswordForm, RecoveryCodeForm, ResetRequestForm, TotpForm
from portal.auth.passwords import hash_password, needs_rehash, verify_password
from portal.auth.qr import qr_svg
from portal.auth.totp import accept_code, new_secret, provisioning_uri
from portal.extensions import db, limiter
from portal.models import PasswordResetToken, User
from portal.models.base import utcnow

bp = Blueprint("auth", __name__)

GENERIC_FAILURE = "The email address or password is not right, or the account is not active."
NO_ACCESS = ("This account no longer gives access to the portal: the subscription of your organisation has ended "
             "or your organisation removed you. Ask your organisation's administrator if this is wrong.")
PENDING_KEY = "pending_login"
MFA_KEY = "mfa"
PENDING_MAX_AGE = timedelta(minutes=5)


def safe_next(target: str | None) -> str | None:
    """Return ``target`` only if it is a path on this site (no scheme, no host, no //)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


def _account_key() -> str:
    # Per account *from this address*: failures slow the guesser down, but never stop the account's owner
    # signing in from elsewhere (a lockout anyone could cause). The address limit bounds each guesser.
    email = (request.form.get("email") or "").strip().lower()[:254]
    return f"account:{email}|address:{get_remote_address()}"


def _failed(response) -> bool:
    # Only failed attempts count towards the limits, so a user who signs in often is never locked out.
    return bool(g.get("login_failed"))


def second_factor_required(user: User) -> bool:
    """Return whether sign-in must pass TOTP: support staff, users who turned it on, and the roles R63 names."""
    if user.needs_totp:
        return True
    required = set(current_app.config["TOTP_REQUIRED_ROLES"])
    return any(m.role.value in required for m in user.memberships if m.suspended_at is None)


def _find_user(email: str) -> User | None:
    return db.session.execute(select(User).where(func.lower(User.email) == email.strip().lower())).scalar()


def complete_login(user: User, *, second_factor: bool = False) -> None:
    """Start a fresh session for the user: new session token, cleared cookie state, audit entry."""
    session.clear()  # no state from before sign-in survives (session fixation)
    user.session_token = secrets.token_hex(32)
    user.last_login_at = utcnow()
    login_user(user)
    session[MFA_KEY] = second_factor
    audit.record(
        "auth.login", target=user, actor=f"user:{user.id}", actor_user_id=user.id, details={"mfa": second_factor}
    )
    db.session.commit()


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(
    lambda: current_app.config["LOGIN_RATE_LIMIT_ACCOUNT"], key_func=_account_key, methods=["POST"], deduct_when=_failed
)
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT_ADDRESS"], methods=["POST"], deduct_when=_failed)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("school.home"))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        user = _find_user(form.email.data)
        # Always one argon2 verification (against a dummy hash for unknown accounts), so the time taken
        # does not tell which accounts exist.
        password_ok = verify_password(user.password_hash if user is not None else None, form.password.data)
        verified = password_ok and user is not None and user.active
        if verified and not scope.may_sign_in(user):
            # R37, R38: the subscriptions this account was for have ended, or every organisation removed it.
            audit.record("auth.login_refused", target=user, actor="anonymous", details={"reason": "no_live_membership"})
            db.session.commit()
            error = NO_ACCESS
        elif verified:
            if needs_rehash(user.password_hash):
                user.password_hash = hash_password(form.password.data)
            nxt = safe_next(request.args.get("next"))
            if second_factor_required(user):
                session.clear()
                session[PENDING_KEY] = {"user_id": user.id, "at": utcnow().isoformat(), "next": nxt}
                db.session.commit()
                return redirect(url_for("auth.totp_setup" if not user.totp_enabled else "auth.totp"))
            complete_login(user)
            return redirect(nxt or url_for("school.home"))
        else:
            g.login_failed = True
            audit.record(
                "auth.login_failed",
                target_type="users",
                target_id=user.id if user else None,
                actor="anonymous",
            )
            db.session.commit()
            error = GENERIC_FAILURE
    status = 401 if error else (400 if form.errors else 200)
    return render_template("auth/login.html", form=form, error=error), status


def _pending_user() -> tuple[User | None, dict]:
    pending = session.get(PENDING_KEY) or {}
    if not pending:
        return None, {}
    from datetime import datetime

    started = datetime.fromisoformat(pending["at"])
    if utcnow() - started > PENDING_MAX_AGE:
        session.pop(PENDING_KEY, None)
        return None, {}
    user = db.session.get(User, pending["user_id"])
    return (user if user and user.active else None), pending


def _pending_key() -> str:
    # Per account, so guessing codes from many addresses still meets one limit (only someone who already
    # knows the password reaches this step).
    return "pending:" + str((session.get(PENDING_KEY) or {}).get("user_id", ""))


def _sign_in_again():
    flash("Sign in again to continue.")
    return redirect(url_for("auth.login"))


def _second_step_limits(view):
    """The limits on guessing a second-factor or recovery code: per account (from any address) and per address."""
    view = limiter.limit(
        lambda: current_app.config["LOGIN_RATE_LIMIT_ADDRESS"], methods=["POST"], deduct_when=_failed
    )(view)
    return limiter.limit(
        lambda: current_app.config["LOGIN_RATE_LIMIT_ACCOUNT"], key_func=_pending_key, methods=["POST"], deduct_when=_failed
    )(view)


def _wait_words(seconds: int) -> str:
    if seconds <= 60:
        return "a minute"
    minutes = -(-seconds // 60)
    if minutes < 90:
        return f"{minutes} minutes"
    hours = -(-minutes // 60)
    return f"{hours} hours"


@bp.errorhandler(429)
def too_many_attempts(exc):
    """Sign-in pages answer a throttle with the form again and how long to wait, not a bare error page."""
    limit = limiter.current_limit
    seconds = max(1, int(limit.reset_at - time.time())) if limit is not None else 60
    message = (
        f"Too many attempts that did not work. Wait {_wait_words(seconds)} and try again, "
        "or reset your password. Signing in from another device or network still works."
    )
    template, form = {
        "auth.totp": ("auth/totp.html", TotpForm),
        "auth.totp_setup": ("auth/totp.html", TotpForm),
        "auth.recovery_login": ("auth/recovery.html", RecoveryCodeForm),
    }.get(request.endpoint or "", ("auth/login.html", LoginForm))
    if request.endpoint == "auth.reset_request":
        template, form = "auth/reset_request.html", ResetRequestForm
        message = f"Too many requests from this network. Wait {_wait_words(seconds)} and try again."
    headers = {"Retry-After": str(seconds)}
    return render_template(template, form=form(formdata=None), error=message), 429, headers


@bp.route("/login/totp", methods=["GET", "POST"])
@_second_step_limits
def totp():
    user, pending = _pending_user()
    if user is None or not user.totp_enabled:
        return _sign_in_again()
    form = TotpForm()
    error = None
    if form.validate_on_submit():
        if accept_code(user, form.code.data):
            complete_login(user, second_factor=True)
            return redirect(pending.get("next") or url_for("school.home"))
        g.login_failed = True
        audit.record("auth.totp_failed", target=user, actor="anonymous")
        db.session.commit()
        error = "That code is not right, or it has been used already. Wait for the next code and try again."
    status = 401 if error else (400 if form.errors else 200)
    return render_template("auth/totp.html", form=form, error=error), status


@bp.route("/login/recovery", methods=["GET", "POST"])
@_second_step_limits
def recovery_login():
    """The second step with a one-time recovery code instead of the authenticator app's code."""
    user, pending = _pending_user()
    if user is None or not user.totp_enabled:
        return _sign_in_again()
    form = RecoveryCodeForm()
    error = None
    if form.validate_on_submit():
        if recovery.use_code(user, form.code.data):
            left = recovery.remaining(user)
            audit.record("auth.recovery_code_used", target=user, actor=f"user:{user.id}", details={"left": left})
            complete_login(user, second_factor=True)
            flash(
                f"You signed in with a recovery code. You have {left} left: each works once. "
                "Make new codes from the Two-factor sign-in page if you are running out."
            )
            return redirect(pending.get("next") or url_for("school.home"))
        g.login_failed = True
        audit.record("auth.recovery_code_failed", target=user, actor="anonymous")
        db.session.commit()
        error = "That recovery code is not right, or it has been used already."
    status = 401 if error else (400 if form.errors else 200)
    return render_template("auth/recovery.html", form=form, error=error), status


def _show_recovery_codes(user: User, next_url: str):
    """Answer with fresh recovery codes: the only time they are shown (only their hashes are stored)."""
    codes = recovery.replace_codes(user)
    audit.record("auth.recovery_codes_made", target=user, actor=f"user:{user.id}", actor_user_id=user.id)
    db.session.commit()
    return render_template("auth/recovery_codes.html", codes=codes, next_url=next_url)


@bp.route("/login/totp/recovery-codes", methods=["POST"])
@login_required
def new_recovery_codes():
    """Replace a signed-in user's recovery codes (the old ones stop working)."""
    user = current_user._get_current_object()
    if not user.totp_enabled:
        return redirect(url_for("auth.totp_setup"))
    return _show_recovery_codes(user, url_for("school.home"))


@bp.route("/login/totp/setup", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT_ADDRESS"], methods=["POST"], deduct_when=_failed)
def totp_setup():
    """Turn on two-factor sign-in: any signed-in user may; support staff must before their first sign-in completes."""
    if current_user.is_authenticated:
        user, pending = current_user._get_current_object(), {}
    else:
        user, pending = _pending_user()
    if user is None:
        return redirect(url_for("auth.login"))
    if user.totp_enabled:
        if current_user.is_authenticated:
            return render_template("auth/totp_on.html", codes_left=recovery.remaining(user))
        return redirect(url_for("auth.totp"))
    if not user.totp_secret:
        # Kept in the database (encrypted), not in the cookie, until a first code confirms it.
        user.totp_secret = new_secret()
        db.session.commit()
    secret = user.totp_secret
    uri = provisioning_uri(secret, user.email, current_app.config["TOTP_ISSUER"])
    form = TotpForm()
    error = None
    if form.validate_on_submit():
        if accept_code(user, form.code.data, secret):
            user.totp_enabled = True
            audit.record("auth.totp_enabled", target=user, actor=f"user:{user.id}", actor_user_id=user.id)
            if current_user.is_authenticated:
                session[MFA_KEY] = True
                return _show_recovery_codes(user, url_for("school.home"))
            complete_login(user, second_factor=True)
            return _show_recovery_codes(user, pending.get("next") or url_for("school.home"))
        g.login_failed = True
        error = "That code is not right. Check the time on your device and try again."
    status = 400 if (error or form.errors) else 200
    return render_template(
        "auth/totp_setup.html", form=form, error=error, secret=secret, uri=uri, qr=qr_svg(uri)
    ), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    user = current_user._get_current_object()
    # Rotating the token ends every session of this user, not just this browser's cookie.
    user.session_token = secrets.token_hex(32)
    audit.record("auth.logout", target=user)
    db.session.commit()
    logout_user()
    session.clear()
    flash("You have signed out.")
    return redirect(url_for("auth.login"))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_reset_token(user: User) -> str:
    """Create a single-use reset token for the user and return it (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    db.session.add(
        PasswordResetToken(
            user_id=user.id,
            token_hash=_token_hash(token),
            expires_at=utcnow() + timedelta(seconds=current_app.config["PASSWORD_RESET_MAX_AGE"]),
        )
    )
    return token


def send_reset_link(user: User) -> None:
    """Email the user a single-use link to choose a new password; the caller commits."""
    token = issue_reset_token(user)
    link = current_app.config["BASE_URL"].rstrip("/") + url_for("auth.reset", token=token)
    minutes = current_app.config["PASSWORD_RESET_MAX_AGE"] // 60
    mail.send(
        user.email,
        "Reset your MIS connection portal password",
        "Someone asked to reset the password for this account.\n\n"
        f"To choose a new password, open this link within {minutes} minutes:\n{link}\n\n"
        "If it was not you, ignore this email: your password has not changed.\n",
    )


@bp.route("/password/reset", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT_ADDRESS"], methods=["POST"])
def reset_request():
    form = ResetRequestForm()
    if form.validate_on_submit():
        user = _find_user(form.email.data)
        if user is not None and user.active:
            send_reset_link(user)
            audit.record("auth.reset_requested", target=user, actor="anonymous")
            db.session.commit()
        # The same answer whether or not the account exists.
        flash("If that address belongs to an account, we have sent it a link to reset the password.")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_request.html", form=form), (400 if form.errors else 200)


def _usable_token(token: str) -> PasswordResetToken | None:
    row = db.session.execute(
        select(PasswordResetToken).where(PasswordResetToken.token_hash == _token_hash(token))
    ).scalar()
    if row is None or row.used_at is not None or row.expires_at < utcnow():
        return None
    return row


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset(token: str):
    row = _usable_token(token)
    if row is None:
        return render_template("auth/reset_invalid.html"), 400
    form = NewPasswordForm()
    if form.validate_on_submit():
        # A conditional UPDATE claims the link, so two requests racing with it cannot both succeed.
        unused = (PasswordResetToken.used_at.is_(None),)
        claim = update(PasswordResetToken).values(used_at=utcnow()).execution_options(synchronize_session=False)
        if db.session.execute(claim.where(PasswordResetToken.id == row.id, *unused)).rowcount != 1:
            db.session.rollback()
            return render_template("auth/reset_invalid.html"), 400
        db.session.execute(claim.where(PasswordResetToken.user_id == row.user_id, *unused))  # retire older links
        user = db.session.get(User, row.user_id)
        user.password_hash = hash_password(form.password.data)
        user.session_token = secrets.token_hex(32)  # signs out every other session
        audit.record("auth.password_reset", target=user, actor=f"user:{user.id}", actor_user_id=user.id)
        db.session.commit()
        flash("Your password has been changed. Sign in with the new password.")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset.html", form=form), (400 if form.errors else 200)
