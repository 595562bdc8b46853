from tests.test_api_statements import *
def test_dbg(app, client, make, auth):
    staff = make.user(support=True)
    db.session.commit()
    auth.login(staff)
    resp = client.post("/admin/products/new/", data={"name": "Abroad", "purpose": "Analyse.", "features": ["pupil_tracking"],
                                                     "processing_location": "IE"}, follow_redirects=True)
    import re
    t = resp.get_data(as_text=True)
    print(re.findall(r'(?s)<form.*?</form>', t)[0][:3000] if '<form' in t else t[:2000])
    print([m for m in re.findall(r'alert[^>]*>(.*?)<', t, re.S)])
    assert 0
