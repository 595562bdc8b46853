from tests.test_admin import *

def test_dbg(app, staff, client, make):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    staff_client = app.test_client()
    r = Auth(staff_client).login(staff)
    print("LOGIN", r.status_code, r.headers.get("Location"))
    print(staff_client.get("/admin/").status_code)
    trust = make.trust()
    u2 = make.user()
    db.session.commit()
    resp = post_form(client, "/admin/memberships/new/", {"user": u2.id, "organisation": trust.id, "role": Role.trust_admin.name})
    print(resp.status_code, re.findall(r'alert[^>]*>(.*?)</div>', resp.data.decode(), re.S))
    print(re.findall(r'<option[^>]*>', client.get("/admin/memberships/new/").data.decode())[:20])
