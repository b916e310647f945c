import time

from app.pos.sessions import SessionStore


def test_new_session_gets_a_box_id_and_is_found_again():
    store = SessionStore()
    session = store.open("")
    assert session.session_id.startswith("CB") and len(session.session_id) <= 40
    assert store.open(session.session_id) is session
    assert store.open("") is not session


def test_unknown_pos_id_is_kept_so_the_transaction_goes_on():
    store = SessionStore()
    assert store.open("SdlyogCyf").session_id == "SdlyogCyf"


def test_sessions_expire_after_silence():
    store = SessionStore(ttl_s=0.05)
    session = store.open("")
    time.sleep(0.1)
    assert store.get(session.session_id) is None and len(store) == 0


def test_drop():
    store = SessionStore()
    session = store.open("")
    assert store.drop(session.session_id) is session
    assert store.get(session.session_id) is None


def test_open_sessions_are_bounded_oldest_first():
    store = SessionStore(max_sessions=3)
    first = store.open("")
    time.sleep(0.001)
    others = [store.open("") for _ in range(3)]
    assert len(store) == 3
    assert store.get(first.session_id) is None
    assert all(store.get(s.session_id) is s for s in others)
