"""Pages for school, trust and LA users: the home page listing the organisations and schools they may see."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, login_required

from portal.extensions import db
from portal.scope import Action, organisations_of, school_or_404, schools_query

bp = Blueprint("school", __name__)


@bp.route("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for("school.home"))
    return redirect(url_for("auth.login"))


@bp.route("/home")
@login_required
def home():
    schools = db.session.execute(schools_query(current_user, Action.view)).scalars().all()
    return render_template("school/home.html", organisations=organisations_of(current_user), schools=schools)


@bp.route("/schools/<int:school_id>")
@login_required
def school(school_id: int):
    school = school_or_404(current_user, school_id, Action.view)
    return render_template("school/school.html", school=school)
