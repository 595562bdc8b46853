from portal.testing.conformance import EPOCH, kit  # noqa
def test_dbg(kit):
    r1 = kit.run("full")
    done = kit.mutate(EPOCH, deleted=2, staff_deleted=1)
    r = kit.run("incremental")
    print("MODE", r.params, r.stats.get("since"))
    for q in kit.served.sandbox.requests("/deletions"): print(q.query)
    assert 0
