"""The app builds on both databases and the sign-in page answers."""


def test_login_page_renders(client):
    resp = client.get("/login")
    assert resp.status_code == 200
    assert b"Sign in" in resp.data


def test_school_admin_sees_own_school_only(app, client, make, auth):
    from portal.extensions import db
    from portal.models import Role

    mine = make.school("Mine")
    other = make.school("Other")
    user = make.user(Role.school_admin, mine)
    db.session.commit()
    auth.login(user)
    home = client.get("/home")
    assert mine.name.encode() in home.data
    assert other.name.encode() not in home.data
    assert client.get(f"/schools/{other.id}").status_code == 404
    assert client.get(f"/schools/{mine.id}").status_code == 200
